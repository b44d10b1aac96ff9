"""SSH between the kernels of a cluster session on a whole node: the manager makes the session a
keypair of its own (``cluster_info.ssh_keypair``), every kernel gets it with an ssh config for
the session's hostnames and its sshd running from the start, so main1's code runs ``ssh sub1 CMD``
with no password or host-key question, and the login has the kernel's environment (BACKENDAI_*,
PATH) -- a command and an interactive login shell alike. The key is never stored by the manager.
The real manager and agent, real Docker, the real kernel image (dropbear, OpenSSH's client)."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import sqlalchemy as sa

from bai.manager.store import tables as t

from .conftest import Node
from .test_sessions import containers

# main1's code: each command through ssh, what it printed and how it ended
PROBE = """import json, os, subprocess
def ssh(*args, stdin=None):
    done = subprocess.run(["ssh", *args], input=stdin, capture_output=True, text=True, timeout=60)
    return [done.returncode, done.stdout, done.stderr]
print(json.dumps({
    "hostname": ssh("sub1", "hostname"),
    "env": ssh("sub1", 'echo "$BACKENDAI_CLUSTER_HOST $BACKENDAI_SESSION_ID $PATH"'),
    "login": ssh("-tt", "sub1", stdin='echo "KPATH=$PATH KHOST=$BACKENDAI_CLUSTER_HOST"; exit\\n'),
    "self": ssh("main1", "echo", "back"),
    "path": os.environ["PATH"],
}))
"""


async def _stdout_of(node: Node, keys: tuple[str, str], ref: str, code: str, within: float = 120.0) -> str:
    """What a query run in the main kernel printed, followed to its (successful) end."""
    loop = asyncio.get_running_loop()
    end, request, out = loop.time() + within, {"mode": "query", "code": code, "runId": None}, ""
    while True:
        st, body = await node.call("POST", f"/session/{ref}", request, keys=keys)
        assert st == 200, body
        result = body["result"]
        out += "".join(text for kind, text in result["console"] if kind == "stdout")
        if result["status"] != "continued":
            assert result["exitCode"] == 0, (result, out)
            return out
        assert loop.time() < end, f"the run did not end within {within} s"
        request = {"mode": "continue", "code": "", "runId": result["runId"]}


async def test_main1_runs_commands_on_sub1_over_ssh_with_the_kernel_environment(node: Node) -> None:
    keys = await node.add_keypair({"max_concurrent_sessions": 1, "max_containers_per_session": 2})
    n = f"cssh-{secrets.token_hex(4)}"
    st, body = await node.call("POST", "/session", {"name": n, "image": "python", "clusterSize": 2}, keys=keys)
    assert st == 201 and body["status"] == "RUNNING", body
    sid = str(body["sessionId"])
    try:
        assert sorted(c["Config"]["Hostname"] for c in await containers(sid)) == ["main1", "sub1"]
        out = await _stdout_of(node, keys, n, PROBE)
        seen: dict[str, Any] = json.loads(out)
        assert seen["hostname"] == [0, "sub1\n", ""], seen["hostname"]
        assert seen["env"] == [0, f"sub1 {sid} {seen['path']}\n", ""], seen["env"]
        login_code, login_out, _ = seen["login"]
        assert login_code == 0 and f"KPATH={seen['path']} KHOST=sub1" in login_out.splitlines(), seen["login"]
        assert seen["self"] == [0, "back\n", ""], seen["self"]
        # The cluster key lives in the kernels only: nothing of it in the manager's database.
        (sub1,) = [c for c in await containers(sid) if c["Config"]["Hostname"] == "sub1"]
        assert "/home/work/.ssh" in sub1["HostConfig"]["Tmpfs"]  # never in a saved image's layer
        async with node.db.connect() as conn:
            rows = [str(dict(r._mapping)) for r in
                    (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == sid))).all()]
            rows += [str(dict(r._mapping)) for r in
                     (await conn.execute(sa.select(t.kernels).where(t.kernels.c.session_id == sid))).all()]
        assert rows and not any("PRIVATE KEY" in r for r in rows)
    finally:
        await node.call("DELETE", f"/session/{n}", keys=keys)
