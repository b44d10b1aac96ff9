"""Dotfiles and the stored bootstrap script on a whole in-process node (real manager, agent,
Docker and kernel image): the original's /user-config, /domain-config and /group-config CRUD, who
may read and write which, bad input refused with problem+json and nothing stored, and the files
landing in a new session's home with their permission (domain, then project, then keypair; later
wins), confined to the home by the runner even against symlinks planted there."""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa

from bai.agent.agent import Agent
from bai.agent.dotfiles import run_bootstrap, script_text, write_dotfiles
from bai.common import protocol as proto
from bai.common.agent_rpc import KernelCreationConfig
from bai.manager.services import dotfiles
from bai.manager.store import fixtures
from bai.manager.store import tables as t
from tests.component.node import conftest as node_fixtures
from tests.component.node.conftest import Node

node = node_fixtures.node  # a whole node for this module (the node tests' fixture)

PROBS = "https://api.backend.ai/probs/"
UD, DD, GD = "/user-config/dotfiles", "/domain-config/dotfiles", "/group-config/dotfiles"
Keys = tuple[str, str]


class World:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.superadmin: Keys = (node.access_key, node.secret_key)
        self.keys: dict[str, Keys] = {}
        self.groups: dict[str, uuid.UUID] = {}

    async def add_user(self, name: str, domain: str, role: str, group: uuid.UUID | None) -> Keys:
        ak, sk = fixtures.generate_keypair()
        uid = uuid.uuid4()
        email = f"{name}-{secrets.token_hex(3)}@dot.test"
        async with self.node.db.begin() as conn:
            await conn.execute(sa.insert(t.users).values(
                uuid=uid, email=email, username=email.split("@")[0], domain_name=domain, role=role,
                main_access_key=ak))
            await conn.execute(sa.insert(t.keypairs).values(
                access_key=ak, secret_key=sk, user_id=email, user=uid, is_admin=role != "user",
                resource_policy="default"))
            if group is not None:
                await conn.execute(sa.insert(t.association_groups_users).values(user_id=uid, group_id=group))
        self.keys[name] = (ak, sk)
        return ak, sk

    async def call(self, who: str, method: str, path: str, params: dict[str, Any] | None = None) -> tuple[int, Any]:
        keys = self.superadmin if who == "superadmin" else self.keys[who]
        if method in ("GET", "DELETE"):
            return await self.node.call(method, f"{path}?{urlencode(params, safe='/~')}" if params else path, keys=keys)
        return await self.node.call(method, path, params or {}, keys=keys)

    async def stored(self, column: Any, key_column: Any, key: Any) -> Any:
        async with self.node.db.connect() as conn:
            return await conn.scalar(sa.select(column).where(key_column == key))


@pytest.fixture(scope="module")
async def world(node: Node) -> World:
    w = World(node)
    async with node.db.begin() as conn:
        w.groups["default"] = uuid.UUID(str(await conn.scalar(
            sa.select(t.groups.c.id).where(t.groups.c.name == "default"))))
        await conn.execute(sa.insert(t.domains).values(name="dot-other"))
        w.groups["other"] = uuid.uuid4()
        await conn.execute(sa.insert(t.groups).values(id=w.groups["other"], name="dot-proj", domain_name="dot-other"))
        w.groups["lonely"] = uuid.uuid4()
        await conn.execute(sa.insert(t.groups).values(id=w.groups["lonely"], name="dot-lonely", domain_name="default"))
    await w.add_user("alice", "default", "user", w.groups["default"])
    await w.add_user("bob", "default", "user", w.groups["lonely"])
    await w.add_user("dadmin", "default", "admin", None)
    await w.add_user("oadmin", "dot-other", "admin", w.groups["other"])
    return w


def _problem(status: int, body: Any, expected: int) -> None:
    assert status == expected, body
    assert isinstance(body, dict) and body["type"].startswith(PROBS) and body["title"], body


async def test_user_dotfile_crud(world: World) -> None:
    st, body = await world.call("alice", "POST", UD, {"path": ".bashrc", "data": "export A=1\n", "permission": "644"})
    assert (st, body) == (200, {})
    st, body = await world.call("alice", "POST", UD, {"path": ".config//x.toml", "data": "k = 1\n", "permission": "600"})
    assert (st, body) == (200, {})
    st, body = await world.call("alice", "GET", UD)
    assert (st, body) == (200, [{"path": ".bashrc", "permission": "644", "data": "export A=1\n"},
                                {"path": ".config/x.toml", "permission": "600", "data": "k = 1\n"}])
    st, body = await world.call("alice", "GET", UD, {"path": ".config/x.toml"})
    assert (st, body) == (200, {"path": ".config/x.toml", "permission": "600", "data": "k = 1\n"})
    st, body = await world.call("alice", "PATCH", UD, {"path": ".bashrc", "data": "export A=2\n", "permission": "755"})
    assert (st, body) == (200, {})
    st, body = await world.call("alice", "GET", UD, {"path": ".bashrc"})
    assert body == {"path": ".bashrc", "permission": "755", "data": "export A=2\n"}
    st, body = await world.call("alice", "DELETE", UD, {"path": ".config/x.toml"})
    assert (st, body) == (200, {"success": True})
    _problem(*await world.call("alice", "GET", UD, {"path": ".config/x.toml"}), 404)
    _problem(*await world.call("alice", "DELETE", UD, {"path": ".config/x.toml"}), 404)
    _problem(*await world.call("alice", "PATCH", UD, {"path": "nope", "data": "", "permission": "644"}), 404)
    # the official client's list sends the owner under a misspelt key; it still works
    st, body = await world.call("dadmin", "GET", UD, {"onwer_access_key": world.keys["alice"][0]})
    assert st == 200 and [d["path"] for d in body] == [".bashrc"]
    # the bootstrap script: stored, read back, blank removes it, too long refused
    assert await world.call("alice", "POST", "/user-config/bootstrap-script", {"script": "echo hi\n"}) == (200, {})
    assert await world.call("alice", "GET", "/user-config/bootstrap-script") == (200, "echo hi\n")
    _problem(*await world.call("alice", "POST", "/user-config/bootstrap-script", {"script": "x" * 65537}), 400)
    assert await world.call("alice", "GET", "/user-config/bootstrap-script") == (200, "echo hi\n")
    assert await world.call("alice", "POST", "/user-config/bootstrap-script", {"script": ""}) == (200, {})
    assert await world.call("alice", "GET", "/user-config/bootstrap-script") == (200, "")


async def test_bad_input_is_refused_and_stores_nothing(world: World) -> None:
    ak = world.keys["bob"][0]
    assert (await world.call("bob", "POST", UD, {"path": ".vimrc", "data": "set nu", "permission": "644"}))[0] == 200
    before = await world.stored(t.keypairs.c.dotfiles, t.keypairs.c.access_key, ak)
    bad: list[dict[str, Any]] = [
        {"path": ".big", "data": "x" * (64 * 1024 + 1), "permission": "644"},
        {"path": ".p1", "data": "", "permission": "78"},
        {"path": ".p2", "data": "", "permission": "7555"},
        {"path": ".p3", "data": "", "permission": "abc"},
        {"path": ".p4", "data": "", "permission": 755},
        {"path": "../x", "data": "", "permission": "644"},
        {"path": "a/../../x", "data": "", "permission": "644"},
        {"path": "/etc/x", "data": "", "permission": "644"},
        {"path": "~/x", "data": "", "permission": "644"},
        {"path": ".ssh/authorized_keys", "data": "ssh-ed25519 AAAA", "permission": "600"},
        {"path": "./.ssh", "data": "", "permission": "600"},
        {"path": ".bai-upload-x", "data": "", "permission": "644"},
        {"path": "", "data": "", "permission": "644"},
        {"path": ".x\n", "data": "", "permission": "644"},
        {"path": ".vimrc", "data": "again", "permission": "644"},  # a duplicate
        {"path": "./.vimrc", "data": "again", "permission": "644"},  # the same path, normalised
        {"path": ".z", "data": "", "permission": "644", "surprise": 1},
        {"data": "", "permission": "644"},
    ]
    for body in bad:
        st, reply = await world.call("bob", "POST", UD, body)
        _problem(st, reply, 400)
        assert await world.stored(t.keypairs.c.dotfiles, t.keypairs.c.access_key, ak) == before, body
    st, reply = await world.call("bob", "POST", UD, {"path": ".vimrc", "data": "", "permission": "644"})
    assert reply["title"] == "Dotfile already exists.", reply
    # the whole list is capped (64 KiB as msgpack, as the original): the second big file does not fit
    assert (await world.call("bob", "POST", UD, {"path": ".big1", "data": "y" * 40000, "permission": "644"}))[0] == 200
    _problem(*await world.call("bob", "POST", UD, {"path": ".big2", "data": "y" * 40000, "permission": "644"}), 400)
    _problem(*await world.call("bob", "PATCH", UD, {"path": ".vimrc", "data": "y" * 30000, "permission": "644"}), 400)
    stored = await world.stored(t.keypairs.c.dotfiles, t.keypairs.c.access_key, ak)
    assert [d["path"] for d in stored] == [".vimrc", ".big1"] and stored[0]["data"] == "set nu"
    _problem(*await world.call("bob", "DELETE", UD), 400)  # no path
    assert (await world.call("bob", "DELETE", UD, {"path": ".big1"}))[0] == 200
    # at most 100 files per owner
    for i in range(99):
        assert (await world.call("bob", "POST", UD, {"path": f"f{i}", "data": "", "permission": "644"}))[0] == 200
    st, reply = await world.call("bob", "POST", UD, {"path": "f100", "data": "", "permission": "644"})
    _problem(st, reply, 400)
    assert "limit" in reply["msg"]


async def test_who_may_read_and_write(world: World) -> None:
    alice, oadmin = world.keys["alice"][0], world.keys["oadmin"][0]
    before = await world.stored(t.keypairs.c.dotfiles, t.keypairs.c.access_key, alice)
    good = {"path": ".who", "data": "x", "permission": "644"}
    # a user writes nobody else's keypair, nor a domain's or a project's
    _problem(*await world.call("bob", "POST", UD, {**good, "owner_access_key": alice}), 403)
    _problem(*await world.call("bob", "GET", UD, {"owner_access_key": alice}), 403)
    _problem(*await world.call("alice", "POST", DD, {**good, "domain": "default"}), 403)
    _problem(*await world.call("alice", "POST", GD, {**good, "group": str(world.groups["default"])}), 403)
    # another domain's admin does not reach into this domain
    _problem(*await world.call("oadmin", "POST", UD, {**good, "owner_access_key": alice}), 403)
    _problem(*await world.call("oadmin", "POST", DD, {**good, "domain": "default"}), 403)
    _problem(*await world.call("oadmin", "GET", DD, {"domain": "default"}), 403)
    _problem(*await world.call("oadmin", "POST", GD, {**good, "group": str(world.groups["default"])}), 404)
    _problem(*await world.call("dadmin", "POST", UD, {**good, "owner_access_key": oadmin}), 403)
    assert await world.stored(t.keypairs.c.dotfiles, t.keypairs.c.access_key, alice) == before
    assert await world.stored(t.domains.c.dotfiles, t.domains.c.name, "default") == []
    assert await world.stored(t.groups.c.dotfiles, t.groups.c.id, world.groups["default"]) == []
    # the domain admin writes their domain's, its projects' and its users' dotfiles
    assert await world.call("dadmin", "POST", UD, {**good, "owner_access_key": alice}) == (200, {})
    assert (await world.call("alice", "GET", UD, {"path": ".who"}))[1]["data"] == "x"
    assert await world.call("dadmin", "DELETE", UD, {"path": ".who", "owner_access_key": alice}) == (200, {"success": True})
    assert await world.call("dadmin", "POST", DD, {**good, "domain": "default"}) == (200, {})
    assert await world.call("dadmin", "POST", GD, {**good, "group": "default"}) == (200, {})
    _problem(*await world.call("dadmin", "POST", GD, {**good, "group": "default"}), 400)  # a duplicate
    # users read their domain's, and the projects they belong to
    assert (await world.call("alice", "GET", DD, {"domain": "default"}))[1] == [
        {"path": ".who", "permission": "644", "data": "x"}]
    assert (await world.call("alice", "GET", GD, {"group": "default", "domain": "default"}))[0] == 200
    _problem(*await world.call("bob", "GET", GD, {"group": "default"}), 403)  # not a member
    _problem(*await world.call("alice", "PATCH", GD, {**good, "group": "default"}), 403)
    _problem(*await world.call("alice", "DELETE", DD, {"domain": "default", "path": ".who"}), 403)
    # the superadmin reaches every domain; an unknown one is 404
    assert await world.call("superadmin", "POST", DD, {**good, "domain": "dot-other"}) == (200, {})
    assert await world.call("superadmin", "POST", GD, {**good, "group": "dot-proj", "domain": "dot-other"}) == (200, {})
    assert (await world.call("oadmin", "GET", GD, {"group": "dot-proj", "domain": "dot-other"}))[1][0]["path"] == ".who"
    _problem(*await world.call("superadmin", "POST", DD, {**good, "domain": "dot-nowhere"}), 404)
    _problem(*await world.call("superadmin", "GET", GD, {"group": str(uuid.uuid4())}), 404)
    for path, params in ((DD, {"domain": "default"}), (GD, {"group": "default"})):
        assert (await world.call("dadmin", "DELETE", path, {**params, "path": ".who"}))[0] == 200


async def _run(world: World, who: str, sess: str, code: str) -> str:
    st, res = await world.call(who, "POST", f"/session/{sess}", {"mode": "query", "code": code, "runId": None})
    assert st == 200 and res["result"]["status"] == "finished", res
    return "".join(item[1] for item in res["result"]["console"] if item[0] in ("stdout", "stderr"))


async def test_a_new_session_gets_the_merged_dotfiles(world: World) -> None:
    live = world.node
    await world.add_user("carol", "default", "user", world.groups["default"])
    layers: tuple[tuple[str, str, dict[str, str], str], ...] = (("dadmin", DD, {"domain": "default"}, "domain"), ("dadmin", GD, {"group": "default"}, "project"),
              ("carol", UD, {}, "keypair"))
    for who, path, scope, text in layers:
        for name, perm in ((".bashrc", {"domain": "600", "project": "640", "keypair": "750"}[text]),
                           (f".config/{text}.toml", "604")):
            st, body = await world.call(who, "POST", path, {**scope, "path": name, "data": f"# {text}\n",
                                                             "permission": perm})
            assert st == 200, body
    assert await world.call("carol", "POST", "/user-config/bootstrap-script", {"script": "echo boot > ~/.booted\n"}) == (200, {})
    sess, other = f"dot-{secrets.token_hex(4)}", f"dot-{secrets.token_hex(4)}"
    try:
        st, body = await world.call("carol", "POST", "/session", {"name": sess, "image": "python",
                                                                  "config": {"resources": {"cpu": "1", "mem": "320m"}}})
        assert st == 201 and body["status"] == "RUNNING", body
        out = await _run(world, "carol", sess, (
            "import os, subprocess\n"
            "for p in ('.bashrc', '.config/domain.toml', '.config/project.toml', '.config/keypair.toml'):\n"
            "    st = os.stat('/home/work/' + p)\n"
            "    print(p, oct(st.st_mode & 0o777), st.st_uid == os.getuid(), repr(open('/home/work/' + p).read()))\n"))
        assert out.splitlines() == [
            ".bashrc 0o750 True '# keypair\\n'",  # the keypair's wins over the project's and the domain's
            ".config/domain.toml 0o604 True '# domain\\n'",
            ".config/project.toml 0o604 True '# project\\n'",
            ".config/keypair.toml 0o604 True '# keypair\\n'",
        ]
        async with live.db.connect() as conn:
            kid = str(await conn.scalar(sa.select(t.kernels.c.id).where(t.kernels.c.session_name == sess)))
            # what the scheduler puts in the creation config: the merged files and, the create
            # request having brought no script, the keypair's stored one
            merged, script = await dotfiles.for_session(conn, world.keys["carol"][0], "default",
                                                        world.groups["default"])
        assert [(d["path"], d["perm"]) for d in merged] == [
            (".config/domain.toml", "604"), (".config/project.toml", "604"), (".bashrc", "750"),
            (".config/keypair.toml", "604")]
        assert script == "echo boot > ~/.booted\n"
        # the stored bootstrap script ran before the session was answered RUNNING
        assert (await _run(world, "carol", sess, "print(open('/home/work/.booted').read())")).strip() == "boot"
        # a create request's own script is run instead of the stored one (base64, as templates send it)
        st, body = await world.call("carol", "POST", "/session", {
            "name": other, "image": "python", "bootstrap_script": base64.b64encode(b"echo own > ~/.own\n").decode(),
            "config": {"resources": {"cpu": "1", "mem": "320m"}}})
        assert st == 201 and body["status"] == "RUNNING", body
        assert (await _run(world, "carol", other, (
            "import os; print(open('/home/work/.own').read().strip(), os.path.exists('/home/work/.booted'))"
        ))).strip() == "own False"
        agent = live.agent.agent
        assert isinstance(agent, Agent)
        kernel = agent.kernels[kid]
        assert kernel.runner is not None
        # confinement on the agent's side: symlinks planted in the home are never followed
        await _run(world, "carol", sess, (
            "import os\n"
            "os.makedirs('/tmp/outside', exist_ok=True)\n"
            "os.symlink('/tmp/outside', '/home/work/.linkdir')\n"
            "os.symlink('/tmp/outside/target', '/home/work/.linkfile')\n"))
        config = KernelCreationConfig.model_validate({"image": {"canonical": "x"}, "dotfiles": [
            {"path": ".linkdir/evil", "perm": "644", "data": "no"},
            {"path": ".linkfile", "perm": "600", "data": "replaced"},
            {"path": "../escape", "perm": "644", "data": "no"},
            {"path": "/etc/escape", "perm": "644", "data": "no"},
            {"path": "ok/nested", "perm": "700", "data": "yes"},
        ]})
        written = await write_dotfiles(kernel.runner.files, config, kid)
        assert written == [".linkfile", "ok/nested"]
        out = await _run(world, "carol", sess, (
            "import os\n"
            "print(sorted(os.listdir('/tmp/outside')), os.path.islink('/home/work/.linkfile'),\n"
            "      open('/home/work/.linkfile').read(), oct(os.stat('/home/work/ok/nested').st_mode & 0o777),\n"
            "      os.path.exists('/home/escape'), os.path.exists('/etc/escape'))\n"))
        assert out.strip() == "[] False replaced 0o700 False False"
        # a script that does not end in time is interrupted, and the kernel still serves
        hanging = KernelCreationConfig.model_validate({"image": {"canonical": "x"}, "bootstrap_script": "sleep 60"})
        assert await run_bootstrap(kernel.runner, hanging, kid, within=0.5) is None
        failing = KernelCreationConfig.model_validate({"image": {"canonical": "x"}, "bootstrap_script": "exit 3"})
        assert await run_bootstrap(kernel.runner, failing, kid) == 3
        assert (await _run(world, "carol", sess, "print('still here')")).strip() == "still here"
    finally:
        for name in (sess, other):
            await world.call("carol", "DELETE", f"/session/{name}")
        for who, path, scope, _ in layers:
            for name in (".bashrc", f".config/{_}.toml"):
                await world.call(who, "DELETE", path, {**scope, "path": name})


def test_an_agent_older_than_1_1_is_not_sent_dotfiles() -> None:
    body = {"session_id": "s", "kernel_ids": ["a", "b"], "configs": [
        {"image": {"canonical": "x"}, "dotfiles": [{"path": ".x", "perm": "644", "data": ""}]},
        {"image": {"canonical": "x"}}]}
    assert proto.for_peer("create_kernels", body, proto.ProtocolVersion(1, 0)) == {
        "session_id": "s", "kernel_ids": ["a", "b"], "configs": [{"image": {"canonical": "x"}}] * 2}
    assert proto.for_peer("create_kernels", body, proto.ProtocolVersion(1, 1)) is body
    assert body["configs"][0]["dotfiles"]  # the caller's body is left alone


def test_a_bootstrap_script_is_text_or_base64_of_text() -> None:
    assert script_text(base64.b64encode(b"echo hi\n").decode()) == "echo hi\n"
    assert script_text("ZWNobyBo\naQo=") == "echo hi\n"  # wrapped base64
    for text in ("true", "date", "ls", "echo hi", "echo boot > ~/.booted\n", "abcd",
                 base64.b64encode(b"\xff\xfe").decode(), base64.b64encode(b"a\x00b").decode()):
        assert script_text(text) == text
