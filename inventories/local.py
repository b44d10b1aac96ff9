"""All-in-one: every group is this machine (pyinfra's local connector, no SSH).

Host data (a dict next to the host) overrides any field of ``roles.settings.Settings``, e.g.
``halfstack = manager = agents = [("@local", {"redis_maxmemory": "1gb"})]``.
"""

halfstack = manager = agents = storage = ["@local"]
