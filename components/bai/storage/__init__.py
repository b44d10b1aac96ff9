"""The storage proxy: virtual folders on the volumes it serves.

Two HTTP APIs in one process: the manager-facing one (folder and quota-scope management,
file operations, token minting; shared-secret auth) and the client-facing one (tus uploads and
downloads authorised by the short-lived JWTs the manager-facing one mints).
"""

__version__ = "24.03.0"
