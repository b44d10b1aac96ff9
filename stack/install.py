"""Optional (``installOnUp``, off by default): run ``bai-install`` from the first management host
once the hosts are up, so that ``pulumi up`` ends with a working cluster.

A pulumi-command remote command connects to that host as root (through the bastion when there
is one), waits for its first boot to finish, and runs ``bai-install install --from-stack`` there
with the stack's inventory; that host reaches the others over SSH with the operator's key, which
arrives on stdin (never in the command line, which Pulumi shows) and is kept mode 600 in root's
home. A changed inventory reruns it; reruns are idempotent.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_command as command

from ._outputs import secret
from .config import StackConfig

KEY_PATH = "/root/.ssh/bai-stack"
INVENTORY_PATH = "/etc/backend.ai/stack-output.json"

#: Reads {"key", "stack"} from stdin; no secret appears in the script itself.
SCRIPT = f"""set -eu
cloud-init status --wait >/dev/null || true
umask 077
mkdir -p /root/.ssh /etc/backend.ai
/usr/bin/python3 -c '
import json, sys
doc = json.load(sys.stdin)
open("{KEY_PATH}", "w").write(doc["key"].strip() + "\\n")
json.dump(doc["stack"], open("{INVENTORY_PATH}", "w"))
'
grep -q "bai-stack" /root/.ssh/config 2>/dev/null || printf '%s\\n' \\
  '# bai-stack' 'Host 10.* 172.* 192.168.*' '  IdentityFile {KEY_PATH}' \\
  '  StrictHostKeyChecking accept-new' >> /root/.ssh/config
/opt/bai/venv/bin/bai-install install --non-interactive --from-stack {INVENTORY_PATH}
"""


def build(cfg: StackConfig, name: str, host_ip: pulumi.Output[str],
          bastion_ip: pulumi.Output[str] | None, inventory: pulumi.Output[dict[str, Any]],
          depends_on: list[pulumi.Resource]) -> command.remote.Command:
    proxy = command.remote.ProxyConnectionArgs(
        host=bastion_ip, user="admin", private_key=secret(cfg.ssh_private_key)
    ) if bastion_ip is not None else None
    stdin = secret(inventory.apply(
        lambda inv: json.dumps({"key": cfg.ssh_private_key, "stack": {"inventory": inv}})))
    return command.remote.Command(
        f"{name}-install",
        connection=command.remote.ConnectionArgs(
            host=host_ip, user="root", private_key=secret(cfg.ssh_private_key),
            proxy=proxy, dial_error_limit=40, per_dial_timeout=15),
        create=SCRIPT,
        stdin=stdin,
        triggers=[inventory.apply(lambda inv: json.dumps(inv, sort_keys=True))],
        opts=pulumi.ResourceOptions(depends_on=depends_on),
    )
