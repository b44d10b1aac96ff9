"""bai app proxy: opens a session's web apps (JupyterLab, a web terminal) and TCP services.

The manager registers a session's service with the coordinator API (``POST /v2/conf``, shared
secret) and hands the user a short-lived token; ``/v2/proxy/auth`` turns that token into a
*circuit*: a port of this proxy that forwards HTTP (websockets included) or raw TCP to the
service, and only for the user the token names."""
