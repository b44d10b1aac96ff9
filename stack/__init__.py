"""Cloud provisioning for bai (Pulumi).

Not built yet: this package reserves the place of the Pulumi program in the layout. Existing
machines are installed with ``bai-install`` and the inventories in ``inventories/``.
"""
