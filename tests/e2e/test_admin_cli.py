"""Our `backend.ai admin ...` against the installed node: every read command in console and JSON
form agrees with what the GraphQL API answers; the write commands run the full lifecycle of
users, keypairs, domains, groups, policies, presets and scaling groups (everything created has a
unique name and is removed again); a plain user created with `admin user add` + `admin keypair
add` is refused the admin listings cleanly and sees only its own keypair; failures exit non-zero
with one line on stderr and nothing on stdout."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.registry import Registry

from .conftest import VENV_BIN, Api, json_out, wait_until

Run = Callable[..., subprocess.CompletedProcess[str]]

ADMIN_EMAIL = "admin@lablup.com"


def gql(api: Api, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    status, body = api.call("POST", "/admin/gql", {"query": query, "variables": variables or {}})
    assert status == 200 and not body.get("errors"), (status, body)
    return body["data"]


def failed(proc: subprocess.CompletedProcess[str]) -> str:
    """A failed command: non-zero, nothing on stdout, exactly one line on stderr (returned)."""
    assert proc.returncode != 0, proc.stdout
    assert proc.stdout == "", proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def items(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    data = json_out(proc)
    assert data["count"] == len(data["items"]) <= data["total_count"], data
    return data["items"]


def console_table(proc: subprocess.CompletedProcess[str]) -> tuple[list[str], list[str]]:
    """(header line, body lines) of a console table."""
    lines = proc.stdout.rstrip("\n").splitlines()
    assert len(lines) >= 2 and set(lines[1]) <= {"-", " "}, proc.stdout
    return lines[0].split("  "), lines[2:]


# ------------------------------------------------------------------------------------------ help

GROUPS = {
    "user": ["list", "info", "add", "update", "delete", "purge"],
    "keypair": ["list", "info", "add", "update", "activate", "deactivate", "delete"],
    "domain": ["list", "info", "add", "update", "delete", "purge"],
    "group": ["list", "info", "add", "update", "delete", "purge", "add-users", "remove-users"],
    "keypair-resource-policy": ["list", "info", "add", "update", "delete"],
    "resource-preset": ["list", "add", "update", "delete"],
    "scaling-group": ["list", "info", "add", "update", "delete", "associate-scaling-group",
                      "dissociate-scaling-group", "associate-group", "dissociate-group"],
    "agent": ["list", "info"],
    "image": ["list", "rescan", "alias", "dealias", "forget"],
    "session": ["list", "info"],
    "audit-log": ["list"],
}


def test_help_of_every_group(bai: Run) -> None:
    top = bai("admin", "--help").stdout
    for group, commands in GROUPS.items():
        assert f"  {group} " in top, (group, top)
        out = bai("admin", group, "--help").stdout
        listed = out.split("Commands:", 1)[1]
        for command in commands:
            assert f"  {command} " in listed, (group, command, out)
            sub = bai("admin", group, command, "--help").stdout
            assert sub.startswith(f"Usage: backend.ai admin {group} {command}"), sub
    assert "--filter" in bai("admin", "user", "list", "--help").stdout
    assert "USERID" in bai("admin", "keypair", "add", "--help").stdout


# ------------------------------------------------------------------------------------------ reads


def agree(truth: Callable[[], Any], ours: Callable[[], Any], what: str) -> Any:
    """The CLI's answer equals the API's, read just before or just after it: other tests on this
    shared node may add or remove objects meanwhile (so a few rounds are allowed)."""
    seen: list[Any] = []
    for _ in range(5):
        before, got, after = truth(), ours(), truth()
        if got in (before, after):
            return got
        seen.append((before, got, after))
    raise AssertionError(f"{what}: the CLI never agreed with the API: {seen}")


def test_user_and_keypair_reads_agree_with_graphql(bai: Run, api: Api, node_env: dict[str, str]) -> None:
    admin_ak = node_env["BACKEND_ACCESS_KEY"]

    def users_truth() -> tuple[int, dict[str, Any]]:
        page = gql(api, "{ user_list(limit: 100, offset: 0) { items { uuid email role main_access_key } "
                        "total_count } }")["user_list"]
        return page["total_count"], {u["email"]: (u["uuid"], u["role"], u["main_access_key"]) for u in page["items"]}

    def users_cli() -> tuple[int, dict[str, Any]]:
        page = json_out(bai("--output", "json", "admin", "user", "list", "--limit", "100"))
        assert page["count"] == len(page["items"])
        return page["total_count"], {u["email"]: (u["uuid"], u["role"], u["main_access_key"]) for u in page["items"]}

    total, users = agree(users_truth, users_cli, "user list")
    assert users[ADMIN_EMAIL][1:] == ("superadmin", admin_ak) and total == len(users)
    me = items(bai("--output", "json", "admin", "user", "info"))[0]
    assert me["email"] == ADMIN_EMAIL and me["role"] == "superadmin" and me["main_access_key"] == admin_ak
    assert me["uuid"] == users[ADMIN_EMAIL][0] and [g["name"] for g in me["groups"]] == ["default"]
    assert items(bai("--output", "json", "admin", "user", "info", "-e", ADMIN_EMAIL)) == [me]

    def console_emails() -> set[str]:
        header, rows = console_table(bai("admin", "user", "list"))
        assert [h.strip() for h in header if h.strip()][:4] == ["UUID", "Username", "Role", "Email"]
        return {r.split()[3] for r in rows}

    agree(lambda: set(users_truth()[1]), console_emails, "user list (console)")
    info = bai("admin", "user", "info").stdout
    assert "Main Access Key" in info and admin_ak in info and "superadmin" in info
    # paging and ordering: a page of one, the first email in order, and the same total
    agree(lambda: (users_truth()[0], min(users_truth()[1])),
          lambda: (lambda p: (p["total_count"], p["items"][0]["email"]))(
              json_out(bai("--output", "json", "admin", "user", "list", "--limit", "1", "--order", "+email"))),
          "user list --limit 1 --order +email")
    only = items(bai("--output", "json", "admin", "user", "list", "--filter", f'email == "{ADMIN_EMAIL}"'))
    assert [u["email"] for u in only] == [ADMIN_EMAIL]

    def keypairs_truth() -> set[tuple[str, str, str]]:
        page = gql(api, "{ keypair_list(limit: 100, offset: 0) { items { access_key secret_key user_id } } }")
        return {(k["access_key"], k["secret_key"], k["user_id"]) for k in page["keypair_list"]["items"]}

    def keypairs_cli() -> set[tuple[str, str, str]]:
        kps = items(bai("--output", "json", "admin", "keypair", "list", "--limit", "100"))
        return {(k["access_key"], k["secret_key"], k["user_id"]) for k in kps}

    assert (admin_ak, node_env["BACKEND_SECRET_KEY"], ADMIN_EMAIL) in agree(keypairs_truth, keypairs_cli,
                                                                              "keypair list")
    mine = items(bai("--output", "json", "admin", "keypair", "info"))[0]
    assert mine["access_key"] == admin_ak and mine["secret_key"] == node_env["BACKEND_SECRET_KEY"]
    assert mine["full_name"] and mine["is_admin"] is True
    header, rows = console_table(bai("admin", "keypair", "list", "--user-id", ADMIN_EMAIL))
    assert "Access Key" in " ".join(header) and "Res.Policy" in " ".join(header)
    assert any(admin_ak in r for r in rows)


def test_domain_group_policy_sgroup_agent_preset_reads(bai: Run, api: Api) -> None:
    def cli(*args: str) -> list[dict[str, Any]]:
        return items(bai("--output", "json", "admin", *args))

    def pick(rows: list[dict[str, Any]], *keys: str) -> set[tuple[Any, ...]]:
        return {tuple(r[k] for k in keys) for r in rows}

    agree(lambda: pick(gql(api, "{ domains { name is_active } }")["domains"], "name", "is_active"),
          lambda: pick(cli("domain", "list"), "name", "is_active"), "domain list")
    assert cli("domain", "info", "default")[0]["name"] == "default"
    assert "Total Resource Slots" in bai("admin", "domain", "info", "default").stdout
    agree(lambda: len(gql(api, "{ domains { name } }")["domains"]),
          lambda: len(console_table(bai("admin", "domain", "list"))[1]), "domain list (console)")

    agree(lambda: pick(gql(api, "{ groups { id name } }")["groups"], "id", "name"),
          lambda: pick(cli("group", "list"), "id", "name"), "group list")
    default = next(g for g in gql(api, "{ groups { id name domain_name } }")["groups"]
                   if g["name"] == "default" and g["domain_name"] == "default")
    by_id = cli("group", "info", default["id"])[0]
    assert by_id["name"] == "default" and by_id["domain_name"] == "default"
    assert isinstance(by_id["total_resource_slots"], dict)
    assert default["id"] in bai("admin", "group", "info", "default").stdout

    agree(lambda: pick(gql(api, "{ keypair_resource_policies { name max_concurrent_sessions } }")
                       ["keypair_resource_policies"], "name", "max_concurrent_sessions"),
          lambda: pick(cli("keypair-resource-policy", "list"), "name", "max_concurrent_sessions"),
          "keypair-resource-policy list")
    info = cli("keypair-resource-policy", "info", "default")[0]
    assert info["name"] == "default" and isinstance(json.loads(info["total_resource_slots"]), dict)  # text, as the official
    assert cli("keypair-resource-policy", "info")[0]["name"] == "default"

    agree(lambda: pick(gql(api, "{ scaling_groups { name driver scheduler } }")["scaling_groups"],
                       "name", "driver", "scheduler"),
          lambda: pick(cli("scaling-group", "list"), "name", "driver", "scheduler"), "scaling-group list")
    sg = cli("scaling-group", "info", "default")[0]
    assert sg["driver"] == "static" and isinstance(sg["driver_opts"], dict)
    assert "Scheduler Opts" in bai("admin", "scaling-group", "info", "default").stdout

    def agents_truth() -> tuple[int, set[str]]:
        page = gql(api, '{ agent_list(limit: 100, offset: 0, status: "ALIVE") { items { id } total_count } }')
        return page["agent_list"]["total_count"], {a["id"] for a in page["agent_list"]["items"]}

    def agents_cli() -> tuple[int, set[str]]:
        page = json_out(bai("--output", "json", "admin", "agent", "list"))
        return page["total_count"], {a["id"] for a in page["items"]}

    total, agent_ids = agree(agents_truth, agents_cli, "agent list")
    assert total >= 1
    agent = cli("agent", "list")[0]
    assert isinstance(agent["available_slots"], dict) and "cpu" in agent["available_slots"]
    one = cli("agent", "info", agent["id"])[0]
    assert one["id"] == agent["id"] and one["status"] == "ALIVE" and one["addr"]
    header, rows = console_table(bai("admin", "agent", "list"))
    assert "Available Slots" in " ".join(header) and any(r.startswith(agent["id"]) for r in rows)
    assert "No matching agent" in failed(bai("admin", "agent", "info", "no-such-agent", check=False))

    agree(lambda: {p["name"] for p in gql(api, "{ resource_presets { name } }")["resource_presets"]},
          lambda: {p["name"] for p in cli("resource-preset", "list")}, "resource-preset list")


OFFICIAL_READS = [
    ("user", "list"), ("user", "info"), ("keypair", "list"), ("keypair", "info"), ("domain", "list"),
    ("domain", "info", "default"), ("group", "list"), ("group", "info", "default"), ("keypair-resource-policy", "list"),
    ("keypair-resource-policy", "info", "default"), ("scaling-group", "list"), ("scaling-group", "info", "default"),
    ("agent", "list"), ("image", "list"), ("session", "list", "--status", "RUNNING"),
]


def test_json_output_is_the_official_clients(bai: Run, official_client: Path, node_env: dict[str, str]) -> None:
    """`--output json` of every read command the official client 24.03.11 also has: the same
    document, key for key (formatting included: sizes, slot objects, JSON text fields)."""
    def official(*args: str) -> Any:
        proc = subprocess.run([str(official_client), "--output", "json", "admin", *args], env=node_env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return json.loads(proc.stdout)

    def ours(*args: str) -> Any:
        return json_out(bai("--output", "json", "admin", *args))

    for args in OFFICIAL_READS:
        theirs = agree(partial(official, *args), partial(ours, *args), " ".join(args))
        assert theirs["count"] == len(theirs["items"])
    sessions = json_out(bai("--output", "json", "admin", "session", "list", "--status", "ALL", "--limit", "1"))
    if sessions["items"]:
        sid = sessions["items"][0]["session_id"]
        assert json_out(bai("--output", "json", "admin", "session", "info", sid)) == official("session", "info", sid)


def test_session_list_and_info(bai: Run, api: Api, cleanup_sessions: list[str]) -> None:
    name = f"adm-{uuid.uuid4().hex[:8]}"
    cleanup_sessions.append(name)
    created = json_out(bai("--output", "json", "session", "create", "-t", name, "python"))
    sid = created["sessionId"]
    running = items(bai("--output", "json", "admin", "session", "list", "--status", "RUNNING"))
    assert sid in [s["session_id"] for s in running]
    assert name in bai("admin", "session", "list", "--status", "RUNNING").stdout
    info = items(bai("--output", "json", "admin", "session", "info", sid))[0]
    assert info["session_id"] == sid and info["name"] == name and info["status"] == "RUNNING"
    truth = gql(api, "query($id: UUID!) { compute_session(id: $id) { main_kernel_id containers { id agent } } }",
                {"id": sid})["compute_session"]
    assert info["main_kernel_id"] == truth["main_kernel_id"]
    assert [(c["kernel_id"], c["agent"]) for c in info["containers"]] == \
        [(c["id"], c["agent"]) for c in truth["containers"]]
    console = bai("admin", "session", "info", sid).stdout
    assert f"+ {truth['main_kernel_id']}" in console and "- Agent: " in console
    assert "UUID format" in failed(bai("admin", "session", "info", "not-a-uuid", check=False))
    assert "No matching compute session" in failed(bai("admin", "session", "info", str(uuid.uuid4()), check=False))


def test_read_failures_are_one_clean_line(bai: Run) -> None:
    line = failed(bai("admin", "user", "info", "-e", f"nobody-{uuid.uuid4().hex[:6]}@example.com", check=False))
    assert "No matching user" in line
    line = failed(bai("admin", "user", "list", "--filter", "no_such_column == 1", check=False))
    assert line.startswith("\u2717 user list failed: GraphQL error:"), line
    err = json.loads(failed(bai("--output", "json", "admin", "domain", "info", "no-such-domain", check=False)))
    assert "No matching domain" in err["error"]
    assert "Invalid value" in bai("admin", "user", "list", "--limit", "0", check=False).stderr


# ------------------------------------------------------------------------------------------ writes


def _as(node_env: dict[str, str], ak: str, sk: str) -> Run:
    """`backend.ai` signed with another keypair."""
    env = {**node_env, "BACKEND_ACCESS_KEY": ak, "BACKEND_SECRET_KEY": sk}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(VENV_BIN / "backend.ai"), *args], env=env, capture_output=True, text=True,
                              timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"backend.ai {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc
    return run


def _mutation(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data = json_out(proc)
    assert data["ok"] is True, data
    return data


@pytest.fixture
def new_user(bai: Run) -> Iterator[dict[str, str]]:
    """A plain user made with `admin user add` (removed with `admin user purge` afterwards)."""
    tag = uuid.uuid4().hex[:10]
    user = {"email": f"cli-{tag}@example.com", "password": f"pw-{tag}-Secret", "username": f"cli-{tag}"}
    try:
        yield user
    finally:
        bai("admin", "user", "purge", "--yes", user["email"], check=False)


def test_user_and_keypair_lifecycle_and_what_a_plain_user_sees(bai: Run, node_env: dict[str, str],
                                                               new_user: dict[str, str]) -> None:
    email, admin_ak, admin_sk = new_user["email"], node_env["BACKEND_ACCESS_KEY"], node_env["BACKEND_SECRET_KEY"]
    created = _mutation(bai("--output", "json", "admin", "user", "add", "default", email, new_user["password"],
                            "-u", new_user["username"], "-n", "CLI User", "--allowed-ip", "127.0.0.0/8,::1",
                            "-g", "default"))
    assert created["user"]["email"] == email and created["user"]["domain_name"] == "default"
    assert [g["name"] for g in created["user"]["groups"]] == ["default"]
    info = items(bai("--output", "json", "admin", "user", "info", "-e", email))[0]
    assert (info["username"], info["full_name"], info["role"], info["status"]) == \
        (new_user["username"], "CLI User", "user", "active")
    assert info["allowed_client_ip"] == ["127.0.0.0/8", "::1"] and info["uuid"] == created["user"]["uuid"]
    console = bai("admin", "user", "add", "default", email, "x", check=False)
    assert "user add failed" in failed(console)  # the email is taken: ok=false, one line

    updated = bai("admin", "user", "update", email, "-n", "Renamed User", "--sudo-session-enabled", "true",
                  "--description", "made by the CLI test")
    assert "ok" in updated.stdout and email in updated.stdout
    info = items(bai("--output", "json", "admin", "user", "info", "-e", email))[0]
    assert info["full_name"] == "Renamed User" and info["sudo_session_enabled"] is True

    kp = _mutation(bai("--output", "json", "admin", "keypair", "add", email, "default", "-r", "2000"))
    ak, sk = kp["access_key"], kp["secret_key"]
    assert kp["keypair"] == {"access_key": ak, "secret_key": sk} and len(ak) == 20 and len(sk) == 40
    mine = {k["access_key"]: k for k in items(bai("--output", "json", "admin", "keypair", "list", "-u", email))}
    assert ak in mine and mine[ak]["rate_limit"] == 2000 and mine[ak]["is_admin"] is False
    assert all(k["user_id"] == email for k in mine.values())

    as_user = _as(node_env, ak, sk)
    for args in (("admin", "user", "list"), ("admin", "domain", "list"), ("admin", "agent", "list"),
                 ("admin", "scaling-group", "list"), ("admin", "user", "info", "-e", ADMIN_EMAIL)):
        line = failed(as_user(*args, check=False))
        assert any(w in line.lower() for w in ("privilege", "forbidden", "only superadmins")), (args, line)
        assert admin_ak not in line and admin_sk not in line
    own = json_out(as_user("--output", "json", "admin", "keypair", "list"))
    assert own["total_count"] == len(mine) and {k["access_key"] for k in own["items"]} == set(mine)
    assert {k["secret_key"] for k in own["items"] if k["access_key"] == ak} == {sk}
    assert admin_ak not in as_user("admin", "keypair", "list").stdout
    assert items(as_user("--output", "json", "admin", "keypair", "info"))[0]["access_key"] == ak
    assert items(as_user("--output", "json", "admin", "user", "info"))[0]["email"] == email
    assert all(s["access_key"] != admin_ak
               for s in items(as_user("--output", "json", "admin", "session", "list", "--status", "ALL")))
    # no escalation: a plain user can neither make a superadmin nor raise its own role
    intruder = f"x-{uuid.uuid4().hex[:8]}@example.com"
    assert "user add failed" in failed(as_user("admin", "user", "add", "default", intruder, "pw", "-r",
                                               "superadmin", check=False))
    assert "No matching user" in failed(bai("admin", "user", "info", "-e", intruder, check=False))
    assert "user update failed" in failed(as_user("admin", "user", "update", email, "-r", "superadmin",
                                                  check=False))
    assert items(bai("--output", "json", "admin", "user", "info", "-e", email))[0]["role"] == "user"
    assert "keypair add failed" in failed(as_user("admin", "keypair", "add", email, "default", "-a",
                                                  check=False))

    # deactivate -> the key is refused; activate -> it works again; update changes the rate limit
    bai("admin", "keypair", "deactivate", ak)
    assert as_user("admin", "keypair", "info", check=False).returncode != 0
    bai("admin", "keypair", "activate", ak)
    assert items(as_user("--output", "json", "admin", "keypair", "info"))[0]["is_active"] is True
    _mutation(bai("--output", "json", "admin", "keypair", "update", ak, "-r", "3000"))
    assert {k["access_key"]: k["rate_limit"] for k in
            items(bai("--output", "json", "admin", "keypair", "list", "-u", email))}[ak] == 3000
    _mutation(bai("--output", "json", "admin", "keypair", "delete", ak))
    assert ak not in {k["access_key"] for k in items(bai("--output", "json", "admin", "keypair", "list",
                                                         "-u", email))}

    # delete = inactivate (status "deleted"); purge asks first, then removes the user
    bai("admin", "user", "delete", email)
    assert items(bai("--output", "json", "admin", "user", "info", "-e", email))[0]["status"] == "deleted"
    refused = subprocess.run([str(VENV_BIN / "backend.ai"), "admin", "user", "purge", email], env=node_env,
                             input="n\n", capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "Cancelled" in refused.stderr
    assert items(bai("--output", "json", "admin", "user", "info", "-e", email))[0]["email"] == email
    purged = _mutation(bai("--output", "json", "admin", "user", "purge", "--yes", email))
    assert purged["email"] == email
    assert "No matching user" in failed(bai("admin", "user", "info", "-e", email, check=False))


def test_domain_and_group_lifecycle(bai: Run, api: Api) -> None:
    domain, group = f"cli-dom-{uuid.uuid4().hex[:8]}", f"cli-prj-{uuid.uuid4().hex[:8]}"
    email = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    try:
        added = _mutation(bai("--output", "json", "admin", "domain", "add", domain, "-d", "made by the CLI test",
                              "--total-resource-slots", '{"cpu": "4", "mem": "8g"}',
                              "--allowed-docker-registries", "cr.example.com"))
        assert added["domain"] == {"name": domain}
        info = items(bai("--output", "json", "admin", "domain", "info", domain))[0]
        assert info["description"] == "made by the CLI test" and info["is_active"] is True
        assert info["allowed_docker_registries"] == ["cr.example.com"] and info["total_resource_slots"]["cpu"] == "4"
        assert "cpu:4" in bai("admin", "domain", "info", domain).stdout
        assert domain in {d["name"] for d in items(bai("--output", "json", "admin", "domain", "list"))}
        assert "domain add failed" in failed(bai("admin", "domain", "add", domain, check=False))
        assert "Invalid value" in bai("admin", "domain", "add", "x", "--total-resource-slots", "{nope",
                                      check=False).stderr
        _mutation(bai("--output", "json", "admin", "domain", "update", domain, "--description", "changed"))
        assert items(bai("--output", "json", "admin", "domain", "info", domain))[0]["description"] == "changed"

        made = _mutation(bai("--output", "json", "admin", "group", "add", domain, group, "-d", "a project"))
        gid = made["group"]["id"]
        assert made["group"] == {"id": gid, "domain_name": domain, "name": group}
        assert items(bai("--output", "json", "admin", "group", "info", group))[0]["id"] == gid
        assert gid in {g["id"] for g in items(bai("--output", "json", "admin", "group", "list", "-d", domain))}
        bai("admin", "group", "update", group, "-d", "renamed project", "--total-resource-slots", '{"cpu": "2"}')
        info = items(bai("--output", "json", "admin", "group", "info", gid))[0]
        assert info["description"] == "renamed project" and info["total_resource_slots"] == {"cpu": "2"}

        # a user of the new domain, made a member of the new project by name, then moved in and out
        user = _mutation(bai("--output", "json", "admin", "user", "add", domain, email, "pw-Secret-1", "-g", group))
        uid = user["user"]["uuid"]
        assert [g["name"] for g in user["user"]["groups"]] == [group]

        def members() -> set[str]:
            found = gql(api, "query($g: UUID) { users(group_id: $g) { uuid } }", {"g": gid})["users"]
            return {u["uuid"] for u in found}

        assert members() == {uid}
        _mutation(bai("--output", "json", "admin", "group", "remove-users", gid, uid))
        assert members() == set()
        _mutation(bai("--output", "json", "admin", "group", "add-users", group, uid))
        assert members() == {uid}
        assert "group add-users failed" in failed(bai("admin", "group", "add-users", "no-such-project", uid,
                                                      check=False))

        _mutation(bai("--output", "json", "admin", "group", "delete", gid))
        assert items(bai("--output", "json", "admin", "group", "info", gid))[0]["is_active"] is False
        _mutation(bai("--output", "json", "admin", "user", "purge", "-y", email))
        _mutation(bai("--output", "json", "admin", "group", "purge", "-y", gid))
        assert "No matching group" in failed(bai("admin", "group", "info", gid, check=False))

        _mutation(bai("--output", "json", "admin", "domain", "delete", domain))
        assert items(bai("--output", "json", "admin", "domain", "info", domain))[0]["is_active"] is False
        _mutation(bai("--output", "json", "admin", "domain", "purge", "--yes", domain))
        assert "No matching domain" in failed(bai("admin", "domain", "info", domain, check=False))
    finally:
        bai("admin", "user", "purge", "-y", email, check=False)
        for g in items(bai("--output", "json", "admin", "group", "list", "-d", domain)):
            bai("admin", "group", "purge", "-y", g["id"], check=False)
        bai("admin", "domain", "purge", "-y", domain, check=False)


def test_keypair_resource_policy_lifecycle(bai: Run) -> None:
    name = f"cli-pol-{uuid.uuid4().hex[:8]}"
    try:
        added = _mutation(bai("--output", "json", "admin", "keypair-resource-policy", "add", name,
                              "--total-resource-slots", '{"cpu": "2", "mem": "2g"}', "--max-concurrent-sessions",
                              "3", "--idle-timeout", "600"))
        assert added["resource_policy"] == {"name": name}
        info = items(bai("--output", "json", "admin", "keypair-resource-policy", "info", name))[0]
        assert info["max_concurrent_sessions"] == 3 and info["idle_timeout"] == 600
        assert json.loads(info["total_resource_slots"])["cpu"] == "2" and info["max_containers_per_session"] == 1
        console = bai("admin", "keypair-resource-policy", "list").stdout
        assert name in console and "Max Concurrent Sessions" in console
        _mutation(bai("--output", "json", "admin", "keypair-resource-policy", "update", name,
                      "--max-concurrent-sessions", "5"))
        info = items(bai("--output", "json", "admin", "keypair-resource-policy", "info", name))[0]
        assert info["max_concurrent_sessions"] == 5 and info["idle_timeout"] == 600
        _mutation(bai("--output", "json", "admin", "keypair-resource-policy", "delete", "--yes", name))
        assert name not in {p["name"] for p in items(bai("--output", "json", "admin", "keypair-resource-policy",
                                                         "list"))}
        assert "keypair-resource-policy delete failed" in failed(
            bai("admin", "keypair-resource-policy", "delete", "-y", name, check=False))
    finally:
        bai("admin", "keypair-resource-policy", "delete", "-y", name, check=False)


def test_resource_preset_lifecycle(bai: Run) -> None:
    name = f"cli-preset-{uuid.uuid4().hex[:8]}"
    try:
        added = _mutation(bai("--output", "json", "admin", "resource-preset", "add", name, "--resource-slots",
                              '{"cpu": "1", "mem": "1g"}', "--shared-memory", "64m"))
        assert added["resource_preset"]["name"] == name
        presets = {p["name"]: p for p in items(bai("--output", "json", "admin", "resource-preset", "list"))}
        assert presets[name]["resource_slots"]["cpu"] == "1" and presets[name]["shared_memory"] == 64 * 2**20
        assert "64.0 MiB" in bai("admin", "resource-preset", "list").stdout
        _mutation(bai("--output", "json", "admin", "resource-preset", "update", name, "--resource-slots",
                      '{"cpu": "2", "mem": "2g"}'))
        presets = {p["name"]: p for p in items(bai("--output", "json", "admin", "resource-preset", "list"))}
        assert presets[name]["resource_slots"]["cpu"] == "2"
        _mutation(bai("--output", "json", "admin", "resource-preset", "delete", name))
        assert name not in {p["name"] for p in items(bai("--output", "json", "admin", "resource-preset", "list"))}
    finally:
        bai("admin", "resource-preset", "delete", name, check=False)


def test_scaling_group_lifecycle(bai: Run, api: Api) -> None:
    name = f"cli-sg-{uuid.uuid4().hex[:8]}"
    try:
        added = _mutation(bai("--output", "json", "admin", "scaling-group", "add", name, "-d", "CLI test group",
                              "--private"))
        assert added["scaling_group"] == {"name": name}
        info = items(bai("--output", "json", "admin", "scaling-group", "info", name))[0]
        assert (info["description"], info["is_public"], info["driver"], info["scheduler"]) == \
            ("CLI test group", False, "static", "fifo")
        _mutation(bai("--output", "json", "admin", "scaling-group", "update", name, "--private", "false",
                      "--description", "changed"))
        info = items(bai("--output", "json", "admin", "scaling-group", "info", name))[0]
        assert info["is_public"] is True and info["description"] == "changed"

        def of_default_domain() -> set[str]:
            found = gql(api, '{ scaling_groups_for_domain(domain: "default") { name } }')
            return {s["name"] for s in found["scaling_groups_for_domain"]}

        out = _mutation(bai("--output", "json", "admin", "scaling-group", "associate-scaling-group", name, "default"))
        assert "associated" in out["detail_msg"] and name in of_default_domain()
        _mutation(bai("--output", "json", "admin", "scaling-group", "dissociate-scaling-group", name, "default"))
        assert name not in of_default_domain()
        gid = next(g["id"] for g in gql(api, '{ groups(domain_name: "default") { id name } }')["groups"]
                   if g["name"] == "default")

        def of_default_project() -> set[str]:
            found = gql(api, "query($g: String!) { scaling_groups_for_user_group(user_group: $g) { name } }",
                        {"g": gid})
            return {s["name"] for s in found["scaling_groups_for_user_group"]}

        _mutation(bai("--output", "json", "admin", "scaling-group", "associate-group", name, gid))
        assert name in of_default_project()
        _mutation(bai("--output", "json", "admin", "scaling-group", "dissociate-group", name, gid))
        assert name not in of_default_project()
        _mutation(bai("--output", "json", "admin", "scaling-group", "delete", name))
        assert "No matching scaling group" in failed(bai("admin", "scaling-group", "info", name, check=False))
    finally:
        bai("admin", "scaling-group", "delete", name, check=False)


def test_image_list_rescan_alias_dealias_forget(bai: Run, api: Api, docker_registry: Registry) -> None:
    """A real registry: `rescan -r` imports its image (waiting on the background task), `alias` /
    `dealias` name it, `forget` drops it from the list; the registry's configuration is removed
    after. (Other images may come and go meanwhile: other tests scan registries of their own.)"""
    host, alias = docker_registry.hostname, f"cli-alias-{uuid.uuid4().hex[:8]}"
    reference = docker_registry.image

    def listed() -> dict[str, dict[str, Any]]:
        found = items(bai("--output", "json", "admin", "image", "list"))
        return {f"{i['registry']}/{i['name']}:{i['tag']}": i for i in found}

    before = listed()
    assert any("python" in i["aliases"] for i in before.values())  # the node's kernel image
    created = gql(api, "mutation($h: String!, $p: CreateContainerRegistryInput!) { "
                       "create_container_registry(hostname: $h, props: $p) { ok msg } }",
                  {"h": host, "p": {"url": docker_registry.url, "type": "docker", "project": ["bai-test"]}})
    assert created["create_container_registry"]["ok"], created
    try:
        scanned = bai("admin", "image", "rescan", "-r", host, timeout=300)
        assert "Finished registry scanning" in scanned.stderr, scanned.stderr
        after = listed()
        assert reference in after and after[reference]["size_bytes"].endswith("M")  # as the official: 330.2M
        console = bai("admin", "image", "list").stdout
        assert any(host in line and docker_registry.tag in line for line in console.splitlines()), console

        bai("admin", "image", "alias", alias, reference)
        assert alias in listed()[reference]["aliases"]
        assert f"The alias has been removed: {alias}" in bai("admin", "image", "dealias", alias).stderr
        assert alias not in listed()[reference]["aliases"]
        assert "image dealias failed" in failed(bai("admin", "image", "dealias", alias, check=False))

        assert json_out(bai("--output", "json", "admin", "image", "forget", reference))["ok"] is True
        assert reference not in listed()
        assert "image forget failed" in failed(bai("admin", "image", "forget", reference, check=False))
        assert "image rescan failed" in failed(bai("admin", "image", "rescan", "-r", "no-such-registry.example",
                                                   check=False))
    finally:
        bai("admin", "image", "forget", reference, check=False)
        gql(api, "mutation($h: String!) { delete_container_registry(hostname: $h) { ok } }", {"h": host})
    assert reference not in listed()


def test_audit_log_shows_what_the_cli_did(bai: Run, node_env: dict[str, str], new_user: dict[str, str]) -> None:
    email = new_user["email"]
    _mutation(bai("--output", "json", "admin", "user", "add", "default", email, new_user["password"]))
    bai("admin", "user", "update", email, "-n", "Audited")
    wanted = f'target == "email={email}"'

    def entries() -> list[dict[str, Any]]:
        return items(bai("--output", "json", "admin", "audit-log", "list", "--filter", wanted))

    # the log is written by a background writer: poll for both entries
    found = wait_until(lambda: (lambda e: e if len(e) >= 2 else None)(entries()), "the audit log entries", 30)
    assert [e["operation"] for e in found[:2]] == ["modify_user", "create_user"]  # newest first
    created = found[1]
    assert (created["email"], created["role"], created["kind"], created["outcome"]) == \
        (ADMIN_EMAIL, "superadmin", "graphql", "ok")
    assert created["access_key"] == node_env["BACKEND_ACCESS_KEY"] and created["client_ip"]
    assert new_user["password"] not in json.dumps(created)  # secrets never reach the log
    oldest_first = items(bai("--output", "json", "admin", "audit-log", "list", "--filter", wanted,
                             "--order", "+created_at"))
    assert [e["id"] for e in oldest_first] == [e["id"] for e in reversed(found)]
    header, rows = console_table(bai("admin", "audit-log", "list", "--filter", wanted))
    assert "Operation" in " ".join(header) and len(rows) == len(found) and "modify_user" in rows[0]

    kp = _mutation(bai("--output", "json", "admin", "keypair", "add", email, "default"))
    line = failed(_as(node_env, kp["access_key"], kp["secret_key"])("admin", "audit-log", "list", check=False))
    assert line.startswith("\u2717 audit-log list failed:") and ADMIN_EMAIL not in line
