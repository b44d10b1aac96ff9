"""Session templates through the real manager and agent (the in-process node): CRUD as the
official client sends it, who may read and change whose templates, bad documents refused with
nothing written, and sessions created from a template (its fields, the request's overrides and
the git clone snippet) through the one creation path."""

from __future__ import annotations

import base64
import json
import re
import secrets
import uuid
from typing import Any

import sqlalchemy as sa
import yaml

from bai.manager.services.session_templates import GitSpec, git_clone_snippet, script_text
from bai.manager.store import tables as t
from tests.component.node import conftest as node_fixtures
from tests.component.node.conftest import Node
from tests.component.node.test_sessions import wait_status

#: The in-process node of tests/component/node (module-scoped: one for this module).
node = node_fixtures.node

PROBS = "https://api.backend.ai/probs/"
#: A stand-in for git (see test_create_from_template_merges_overrides_and_clones_git).
FAKE_GIT = """git() {
  printf 'git %s\\n' "$*" >> /home/work/git-calls
  case "$1" in -c) f="${2#credential.helper=store --file=}"; echo "$(cat "$f") $(stat -c %a "$f")" >> /home/work/git-calls ;; esac
  case "$*" in *" clone "*) mkdir -p code ;; esac
}
"""
POLICY = {"total_resource_slots": {}, "max_concurrent_sessions": 5, "max_containers_per_session": 1,
          "idle_timeout": 600}


def task_yaml(name: str, **spec: Any) -> str:
    kernel = {"image": "python", "environ": {"FROM_TEMPLATE": "1", "SHARED": "template"},
              "run": {"startup_command": None}}
    doc = {"api_version": "6", "kind": "taskTemplate", "metadata": {"name": name, "tag": "from-tpl"},
           "spec": {"session_type": "interactive", "kernel": kernel,
                    "resources": {"cpu": "1", "mem": "320m"}, **spec}}
    return yaml.safe_dump(doc)


async def count(node: Node) -> int:
    async with node.db.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(t.session_templates)) or 0)


async def user_outside_projects(node: Node) -> tuple[str, str]:
    """A user of the default domain who belongs to no project."""
    keys = await node.add_keypair(POLICY)
    async with node.db.begin() as conn:
        user = await conn.scalar(sa.select(t.keypairs.c.user).where(t.keypairs.c.access_key == keys[0]))
        await conn.execute(sa.delete(t.association_groups_users).where(
            t.association_groups_users.c.user_id == user))
    return keys


def problem(status: int, body: Any, kind: str = "invalid-api-params") -> dict[str, Any]:
    assert isinstance(body, dict) and body["type"] == PROBS + kind, (status, body)
    return body


async def test_crud_as_the_official_client_sends_it(node: Node) -> None:
    owner = await node.add_keypair(POLICY)
    name = f"tpl-{secrets.token_hex(3)}"
    st, created = await node.call("POST", "/template/session", {
        "payload": task_yaml(name), "group_name": "default", "domain_name": "default", "owner_access_key": None},
        keys=owner)
    assert st == 200, created
    [entry] = created
    tid = entry["id"]
    assert uuid.UUID(tid).hex == tid and len(entry["user"]) == 32

    st, listed = await node.call("GET", "/template/session", keys=owner)
    assert st == 200
    [mine] = [x for x in listed if x["id"] == tid]
    assert {"name", "id", "created_at", "is_owner", "user", "group", "user_email", "group_name",
            "domain_name", "type", "template"} <= set(mine)
    assert mine["name"] == name and mine["is_owner"] is True and mine["type"] == "task"
    assert mine["group_name"] == "default" and mine["domain_name"] == "default"
    assert mine["template"]["spec"]["kernel"]["image"] == "python"

    st, text = await node.call("GET", f"/template/session/{tid}?format=yaml", keys=owner)
    assert st == 200 and isinstance(text, str)
    document = yaml.safe_load(text)
    assert document["metadata"] == {"name": name, "tag": "from-tpl"}
    assert document["spec"]["resources"] == {"cpu": "1", "mem": "320m"}
    st, as_json = await node.call("GET", f"/template/session/{tid}?format=json", keys=owner)
    assert st == 200 and as_json == document

    # JSON works as well as YAML; the spec's aliases are normalised
    changed = json.dumps({"apiVersion": 6, "kind": "task_template", "metadata": {"name": name + "-2"},
                          "spec": {"type": "batch", "kernel": {"image": "python",
                                                               "run": {"startup": "python -c 'print(1)'"}}}})
    st, body = await node.call("PUT", f"/template/session/{tid}", {"payload": changed}, keys=owner)
    assert (st, body) == (200, {"success": True})
    st, as_json = await node.call("GET", f"/template/session/{tid}?format=json", keys=owner)
    assert as_json["api_version"] == "6" and as_json["metadata"]["name"] == name + "-2"
    assert as_json["spec"]["session_type"] == "batch"
    assert as_json["spec"]["kernel"]["run"] == {"startup_command": "python -c 'print(1)'"}

    st, body = await node.call("DELETE", f"/template/session/{tid}", keys=owner)
    assert (st, body) == (200, {"success": True})
    st, body = await node.call("GET", f"/template/session/{tid}?format=json", keys=owner)
    assert st == 404 and problem(st, body, "task-template-not-found")
    st, listed = await node.call("GET", "/template/session", keys=owner)
    assert tid not in {x["id"] for x in listed}
    async with node.db.connect() as conn:  # a soft delete, as the original's
        active = await conn.scalar(sa.select(t.session_templates.c.is_active).where(
            t.session_templates.c.id == uuid.UUID(tid)))
    assert active is False


async def test_a_list_payload_stores_every_template(node: Node) -> None:
    owner = await node.add_keypair(POLICY)
    payload = yaml.safe_dump([yaml.safe_load(task_yaml("one")),
                              {"template": yaml.safe_load(task_yaml("inner")), "name": "renamed"}])
    st, created = await node.call("POST", "/template/session", {"payload": payload}, keys=owner)
    assert st == 200 and len(created) == 2, created
    st, listed = await node.call("GET", "/template/session", keys=owner)
    names = {x["id"]: x["name"] for x in listed}
    assert [names[c["id"]] for c in created] == ["one", "renamed"]
    # without a project the templates are the owner's alone
    assert all(x["group"] is None for x in listed if x["id"] in names)


async def test_bad_documents_are_refused_naming_the_field_and_nothing_is_written(node: Node) -> None:
    owner = await node.add_keypair(POLICY)
    before = await count(node)
    good = yaml.safe_load(task_yaml("good"))
    no_image = yaml.safe_load(task_yaml("bad"))
    del no_image["spec"]["kernel"]["image"]
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=True))
    cases: list[tuple[str, str]] = [
        ("kind: [unclosed", "payload"),
        ("just a string", "payload"),
        (yaml.safe_dump(no_image), "payload.spec.kernel.image"),
        (yaml.safe_dump([good, no_image]), "payload[1].spec.kernel.image"),  # the good one is not kept
        (yaml.safe_dump({**good, "kind": "clusterTemplate"}), "payload.kind"),
        (yaml.safe_dump({**good, "spec": {**good["spec"], "kernel": {**good["spec"]["kernel"], "imagee": "x"}}}),
         "payload.spec.kernel.imagee"),
        (task_yaml("git", kernel={"image": "python", "git": {"repository": "x", "branch": "-x; rm -rf /"}}),
         "payload.spec.kernel.git.branch"),
        (yaml.safe_dump([good] * 101), "payload"),
        (laughs, "payload"),
        (task_yaml("when") + "created: 2024-01-01\n", "payload.created"),
        ("[]", "payload"),
    ]
    for payload, field in cases:
        st, body = await node.call("POST", "/template/session", {"payload": payload}, keys=owner)
        assert st == 400, (payload[:60], body)
        assert field in problem(st, body)["data"], (field, body)
    st, body = await node.call("POST", "/template/session", {"payload": "x" * (64 * 1024 + 1)}, keys=owner)
    assert st == 400 and "payload" in problem(st, body)["data"]
    st, body = await node.call("POST", "/template/session", {"payload": 5}, keys=owner)
    assert st == 400 and "payload" in problem(st, body)["data"]
    st, body = await node.call("POST", "/template/session", {"payload": task_yaml("g"), "group": "nope"}, keys=owner)
    assert st == 400 and "group" in problem(st, body)["data"]
    assert await count(node) == before


async def test_who_may_read_and_change_whose_templates(node: Node) -> None:
    owner, member = await node.add_keypair(POLICY), await node.add_keypair(POLICY)
    outsider = await user_outside_projects(node)
    st, [shared] = await node.call("POST", "/template/session", {"payload": task_yaml("shared"),
                                                                 "group_name": "default"}, keys=owner)
    st, [private] = await node.call("POST", "/template/session", {"payload": task_yaml("private")}, keys=owner)
    shared_id, private_id = shared["id"], private["id"]

    # a member of the template's project reads it but may not change it
    st, listed = await node.call("GET", "/template/session", keys=member)
    ids = {x["id"]: x for x in listed}
    assert shared_id in ids and private_id not in ids and ids[shared_id]["is_owner"] is False
    st, _ = await node.call("GET", f"/template/session/{shared_id}?format=json", keys=member)
    assert st == 200
    st, body = await node.call("PUT", f"/template/session/{shared_id}", {"payload": task_yaml("x")}, keys=member)
    assert st == 403 and problem(st, body, "generic-forbidden")
    st, body = await node.call("DELETE", f"/template/session/{shared_id}", keys=member)
    assert st == 403
    # what a user may not read does not exist for them
    for keys, tid in ((member, private_id), (outsider, shared_id), (outsider, private_id)):
        for method, path, payload in (("GET", f"/template/session/{tid}?format=json", None),
                                      ("PUT", f"/template/session/{tid}", {"payload": task_yaml("x")}),
                                      ("DELETE", f"/template/session/{tid}", None)):
            st, body = await node.call(method, path, payload, keys=keys)
            assert st == 404 and problem(st, body, "task-template-not-found"), (method, body)
    st, listed = await node.call("GET", "/template/session", keys=outsider)
    assert not {shared_id, private_id} & {x["id"] for x in listed}
    st, body = await node.call("GET", "/template/session/not-an-id?format=json", keys=owner)
    assert st == 404
    # acting for another keypair is for admins only
    st, body = await node.call("GET", f"/template/session/{private_id}?format=json&owner_access_key={owner[0]}",
                               keys=member)
    assert st == 403

    # the superadmin sees every template with all, and may change them
    st, listed = await node.call("GET", "/template/session?all=true")
    assert {shared_id, private_id} <= {x["id"] for x in listed}
    st, listed = await node.call("GET", "/template/session", {"all": True})  # the official client's way
    assert {shared_id, private_id} <= {x["id"] for x in listed}
    st, listed = await node.call("GET", "/template/session")
    assert private_id not in {x["id"] for x in listed}
    st, body = await node.call("DELETE", f"/template/session/{private_id}")
    assert st == 200
    # nothing changed what they could not change
    async with node.db.connect() as conn:
        name = await conn.scalar(sa.select(t.session_templates.c.name).where(
            t.session_templates.c.id == uuid.UUID(shared_id)))
    assert name == "shared"


async def test_create_from_template_merges_overrides_and_clones_git(node: Node) -> None:
    owner = await node.add_keypair(POLICY)
    # The kernel image has no git (and the test no repository to reach): the template's own
    # bootstrap defines a git that records how the appended snippet calls it, and what the
    # credential file it is pointed at holds, so the session shows what really ran at its start.
    own_script = base64.b64encode(FAKE_GIT.encode()).decode()
    payload = task_yaml("runs", kernel={
        "image": "python", "environ": {"FROM_TEMPLATE": "1", "SHARED": "template"},
        "run": {"bootstrap": own_script},
        "git": {"repository": "https://git.example.com/org/code.git", "branch": "main", "commit": "abc123",
                "credential": {"username": "me", "password": "p@ss word'"}}})
    st, [created] = await node.call("POST", "/template/session", {"payload": payload, "group_name": "default"},
                                    keys=owner)
    tid = created["id"]
    name = f"ft-{secrets.token_hex(4)}"
    # as the official client sends it: undefined fields left out, unset ones null, mounts empty
    st, body = await node.call("POST", "/session/_/create-from-template", {
        "template_id": tid, "domain": "default", "group": "default", "name": name, "dependencies": None,
        "starts_at": None, "reuseIfExists": True,
        "config": {"mounts": [], "environ": {"SHARED": "request"}}}, keys=owner)
    assert st == 201, body
    assert body["status"] == "RUNNING" and body["created"] is True and body["sessionName"] == name
    sid = body["sessionId"]
    try:
        st, res = await node.call("POST", f"/session/{name}", {
            "mode": "query", "runId": None,
            "code": "import os; print(1, os.environ.get('FROM_TEMPLATE'), os.environ['SHARED'])"}, keys=owner)
        assert st == 200 and res["result"]["status"] == "finished", res
        # config keys replace the template's whole (the original's rule): environ is the request's
        assert res["result"]["console"] == [["stdout", "1 None request\n"]]
        async with node.db.connect() as conn:
            row = (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == uuid.UUID(sid)))).one()
            kernel = (await conn.execute(sa.select(t.kernels).where(t.kernels.c.session_id == row.id))).one()
        assert row.tag == "from-tpl" and row.image.endswith("python:3.11-debian12")
        assert kernel.requested_slots["mem"] == str(320 * 2**20)
        script = base64.b64decode(row.bootstrap_script).decode()
        assert script.startswith(FAKE_GIT)
        st, res = await node.call("POST", f"/session/{name}", {
            "mode": "query", "runId": None,
            "code": "import os; print(open('/home/work/git-calls').read(), end='')"}, keys=owner)
        [[_, calls]] = res["result"]["console"]
        clone, credential, checkout = calls.splitlines()
        # the password reaches git through a private file, never on its command line; the file is gone
        cred_file = re.fullmatch(r"git -c credential.helper=store --file=(\S+) clone -b main -- "
                                 r"https://git.example.com/org/code.git code", clone)
        assert cred_file, calls
        assert credential == "https://me:p%40ss%20word%27@git.example.com 600"
        assert checkout == "git checkout -q abc123"
        st, res = await node.call("POST", f"/session/{name}", {
            "mode": "query", "runId": None,
            "code": f"import os; print(os.path.exists({cred_file.group(1)!r}))"}, keys=owner)
        assert res["result"]["console"] == [["stdout", "False\n"]]
    finally:
        st, _ = await node.call("DELETE", f"/session/{name}", keys=owner)
        await wait_status(node, sid, {"TERMINATED"})


async def test_create_from_template_refusals(node: Node) -> None:
    owner, outsider = await node.add_keypair(POLICY), await user_outside_projects(node)
    st, [private] = await node.call("POST", "/template/session", {"payload": task_yaml("mine")}, keys=owner)
    git_payload = task_yaml("git", kernel={"image": "python", "git": {"repository": "https://h/r"}})
    st, [with_git] = await node.call("POST", "/template/session", {"payload": git_payload}, keys=owner)
    cases = [
        (owner, {"name": "nothing-to-run"}, 400, "invalid-api-params"),
        (owner, {"name": "no-such", "template_id": uuid.uuid4().hex}, 404, "task-template-not-found"),
        (outsider, {"name": "not-theirs", "template_id": private["id"]}, 404, "task-template-not-found"),
        (owner, {"name": "bad-config", "template_id": with_git["id"], "config": {"mounts": "x"}}, 400,
         "invalid-api-params"),
        (owner, {"name": "x", "template_id": private["id"]}, 400, "invalid-api-params"),  # the session name
        (owner, {"name": "bad-type", "template_id": private["id"], "type": "weird"}, 400, "invalid-api-params"),
    ]
    for keys, request, status, kind in cases:
        st, body = await node.call("POST", "/session/_/create-from-template", request, keys=keys)
        assert st == status and problem(st, body, kind), (request, body)
    async with node.db.connect() as conn:
        made = await conn.scalar(sa.select(sa.func.count()).select_from(t.sessions).where(
            t.sessions.c.name.in_([c[1]["name"] for c in cases])))
    assert made == 0


def cluster_yaml(name: str, *nodes: tuple[str, str, int], **spec: Any) -> str:
    return yaml.safe_dump({
        "api_version": "6", "kind": "clusterTemplate", "mode": "single-node", "metadata": {"name": name},
        "spec": {"environ": {"FROM_CLUSTER": "c"},
                 "nodes": [{"role": role, "session_template": tid, "replicas": n} for role, tid, n in nodes],
                 **spec}})


async def test_cluster_templates_and_create_cluster(node: Node) -> None:
    owner = await node.add_keypair({**POLICY, "max_containers_per_session": 2})
    st, [task] = await node.call("POST", "/template/session", {"payload": task_yaml("node")}, keys=owner)
    other = task_yaml("other", resources={"cpu": "1", "mem": "512m"})
    st, [differs] = await node.call("POST", "/template/session", {"payload": other}, keys=owner)
    st, [cluster] = await node.call("POST", "/template/cluster", {
        "payload": cluster_yaml("pair", ("main", task["id"], 1), ("sub", task["id"], 1))}, keys=owner)
    assert st == 200
    cid = cluster["id"]
    # the two kinds stay apart
    st, listed = await node.call("GET", "/template/cluster", keys=owner)
    assert [x["id"] for x in listed if x["is_owner"]] == [cid] and listed[0]["type"] == "cluster"
    st, body = await node.call("GET", f"/template/session/{cid}?format=json", keys=owner)
    assert st == 404
    st, body = await node.call("POST", "/template/cluster", {"payload": task_yaml("wrong-kind")}, keys=owner)
    assert st == 400 and "payload.kind" in problem(st, body)["data"]
    st, body = await node.call("POST", "/template/cluster", {
        "payload": cluster_yaml("bad", ("main", "not-a-uuid", 1))}, keys=owner)
    assert st == 400 and "payload.spec.nodes.0.session_template" in problem(st, body)["data"]

    name = f"cl-{secrets.token_hex(4)}"
    st, body = await node.call("POST", "/session/_/create-cluster", {
        "clientSessionToken": name, "template_id": cid, "tag": "cluster-tag"}, keys=owner)
    assert st == 201, body
    assert body["status"] == "RUNNING" and body["created"] is True
    sid = body["kernelId"]
    try:
        async with node.db.connect() as conn:
            row = (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == uuid.UUID(sid)))).one()
        assert (row.name, row.cluster_size, row.cluster_mode, row.tag) == (name, 2, "single-node", "cluster-tag")
        assert row.environ == {"FROM_TEMPLATE": "1", "SHARED": "template", "FROM_CLUSTER": "c"}
    finally:
        st, _ = await node.call("DELETE", f"/session/{name}", keys=owner)
        await wait_status(node, sid, {"TERMINATED"})

    # nodes must agree on the image and resources; a node's template must be readable
    st, [mixed] = await node.call("POST", "/template/cluster", {
        "payload": cluster_yaml("mixed", ("main", task["id"], 1), ("sub", differs["id"], 1))}, keys=owner)
    st, body = await node.call("POST", "/session/_/create-cluster", {
        "clientSessionToken": "mixed-nodes", "template_id": mixed["id"]}, keys=owner)
    assert st == 400 and "spec.nodes[1].session_template" in problem(st, body)["data"]
    st, [dangling] = await node.call("POST", "/template/cluster", {
        "payload": cluster_yaml("dangling", ("main", uuid.uuid4().hex, 1))}, keys=owner)
    st, body = await node.call("POST", "/session/_/create-cluster", {
        "clientSessionToken": "dangling", "template_id": dangling["id"]}, keys=owner)
    assert st == 400 and "spec.nodes[0].session_template" in problem(st, body)["data"]
    st, body = await node.call("DELETE", f"/template/cluster/{cid}", keys=owner)
    assert st == 200
    st, body = await node.call("POST", "/session/_/create-cluster", {
        "clientSessionToken": "deleted-tpl", "template_id": cid}, keys=owner)
    assert st == 404 and problem(st, body, "task-template-not-found")


def test_bootstrap_scripts_are_read_as_the_agent_reads_them() -> None:
    text = "echo hi\nls -l\n"
    assert script_text(text) == text
    assert script_text(base64.b64encode(text.encode()).decode()) == text
    assert script_text("echo") == "echo"  # valid base64 characters, but not of UTF-8 text
    snippet = git_clone_snippet(GitSpec(repository="https://h/o/r", destination_dir="my dir"))
    assert snippet.splitlines()[1:] == ["git clone -- https://h/o/r 'my dir'"]
