"""Entry point Pulumi runs (``main: stack/`` in Pulumi.yaml)."""

raise SystemExit(
    "bai's Pulumi program is not available yet; install onto existing machines with "
    "`bai-install install --inventory inventories/<file>.py`."
)
