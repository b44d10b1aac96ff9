"""All-in-one: every group is this machine (pyinfra's local connector, no SSH).

Host data (a dict next to the host) overrides any setting of ``roles.settings.Settings``, nested
per component, e.g.
``halfstack = manager = agents = storage = [("@local", {"redis": {"maxmemory": "1gb"}})]``.
"""

halfstack = manager = agents = storage = ["@local"]
