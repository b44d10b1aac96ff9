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
from collections.abc import Callable
from typing import Any

from .conftest import Api, json_out

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
                      "dissociate-scaling-group"],
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


def test_user_and_keypair_reads_agree_with_graphql(bai: Run, api: Api, node_env: dict[str, str]) -> None:
    admin_ak = node_env["BACKEND_ACCESS_KEY"]
    truth = gql(api, "{ user_list(limit: 100, offset: 0) { items { uuid email role main_access_key "
                     "groups { name } } total_count } }")["user_list"]
    listed = items(bai("--output", "json", "admin", "user", "list", "--limit", "100"))
    assert json_out(bai("--output", "json", "admin", "user", "list", "--limit", "100"))["total_count"] == \
        truth["total_count"]
    assert {u["email"]: (u["uuid"], u["role"], u["main_access_key"]) for u in listed} == \
        {u["email"]: (u["uuid"], u["role"], u["main_access_key"]) for u in truth["items"]}
    me = items(bai("--output", "json", "admin", "user", "info"))[0]
    assert me["email"] == ADMIN_EMAIL and me["role"] == "superadmin" and me["main_access_key"] == admin_ak
    assert items(bai("--output", "json", "admin", "user", "info", "-e", ADMIN_EMAIL)) == [me]
    header, rows = console_table(bai("admin", "user", "list"))
    assert [h.strip() for h in header if h.strip()][:4] == ["UUID", "Username", "Role", "Email"]
    assert len(rows) == truth["total_count"] and any(ADMIN_EMAIL in r for r in rows)
    info = bai("admin", "user", "info").stdout
    assert "Main Access Key" in info and admin_ak in info and "superadmin" in info
    # paging: one item per page, and the second page is another user (when there are two)
    first = json_out(bai("--output", "json", "admin", "user", "list", "--limit", "1", "--order", "+email"))
    assert first["count"] == 1 and first["total_count"] == truth["total_count"]
    assert first["items"][0]["email"] == min(u["email"] for u in truth["items"])
    only = items(bai("--output", "json", "admin", "user", "list", "--filter", f'email == "{ADMIN_EMAIL}"'))
    assert [u["email"] for u in only] == [ADMIN_EMAIL]

    kp_truth = gql(api, "{ keypair_list(limit: 100, offset: 0) { items { access_key secret_key user_id } "
                        "total_count } }")["keypair_list"]
    kps = items(bai("--output", "json", "admin", "keypair", "list", "--limit", "100"))
    assert {(k["access_key"], k["secret_key"], k["user_id"]) for k in kps} == \
        {(k["access_key"], k["secret_key"], k["user_id"]) for k in kp_truth["items"]}
    mine = items(bai("--output", "json", "admin", "keypair", "info"))[0]
    assert mine["access_key"] == admin_ak and mine["secret_key"] == node_env["BACKEND_SECRET_KEY"]
    assert mine["full_name"] and mine["is_admin"] is True
    header, rows = console_table(bai("admin", "keypair", "list", "--user-id", ADMIN_EMAIL))
    assert "Access Key" in " ".join(header) and "Res.Policy" in " ".join(header)
    assert any(admin_ak in r for r in rows)


def test_domain_group_policy_sgroup_agent_preset_reads(bai: Run, api: Api) -> None:
    truth = gql(api, "{ domains { name is_active } groups { id name domain_name } "
                     "keypair_resource_policies { name max_concurrent_sessions } "
                     "scaling_groups { name driver scheduler } resource_presets { name } "
                     "agent_list(limit: 100, offset: 0, status: \"ALIVE\") { items { id status } total_count } }")
    domains = items(bai("--output", "json", "admin", "domain", "list"))
    assert {d["name"]: d["is_active"] for d in domains} == {d["name"]: d["is_active"] for d in truth["domains"]}
    assert items(bai("--output", "json", "admin", "domain", "info", "default"))[0]["name"] == "default"
    assert "Total Resource Slots" in bai("admin", "domain", "info", "default").stdout
    _, rows = console_table(bai("admin", "domain", "list"))
    assert len(rows) == len(truth["domains"])

    groups = items(bai("--output", "json", "admin", "group", "list"))
    assert {g["id"]: g["name"] for g in groups} == {g["id"]: g["name"] for g in truth["groups"]}
    default = next(g for g in truth["groups"] if g["name"] == "default" and g["domain_name"] == "default")
    by_id = items(bai("--output", "json", "admin", "group", "info", default["id"]))[0]
    assert by_id["name"] == "default" and by_id["domain_name"] == "default"
    assert isinstance(by_id["total_resource_slots"], dict)
    assert default["id"] in bai("admin", "group", "info", "default").stdout

    policies = items(bai("--output", "json", "admin", "keypair-resource-policy", "list"))
    assert {p["name"]: p["max_concurrent_sessions"] for p in policies} == \
        {p["name"]: p["max_concurrent_sessions"] for p in truth["keypair_resource_policies"]}
    info = items(bai("--output", "json", "admin", "keypair-resource-policy", "info", "default"))[0]
    assert info["name"] == "default" and isinstance(info["total_resource_slots"], dict)
    assert items(bai("--output", "json", "admin", "keypair-resource-policy", "info"))[0]["name"] == "default"

    sgroups = items(bai("--output", "json", "admin", "scaling-group", "list"))
    assert {(s["name"], s["driver"], s["scheduler"]) for s in sgroups} == \
        {(s["name"], s["driver"], s["scheduler"]) for s in truth["scaling_groups"]}
    sg = items(bai("--output", "json", "admin", "scaling-group", "info", "default"))[0]
    assert sg["driver"] == "static" and isinstance(sg["driver_opts"], dict)
    assert "Scheduler Opts" in bai("admin", "scaling-group", "info", "default").stdout

    agents = json_out(bai("--output", "json", "admin", "agent", "list"))
    assert agents["total_count"] == truth["agent_list"]["total_count"] >= 1
    assert {a["id"] for a in agents["items"]} == {a["id"] for a in truth["agent_list"]["items"]}
    agent_id = agents["items"][0]["id"]
    assert isinstance(agents["items"][0]["available_slots"], dict) and "cpu" in agents["items"][0]["available_slots"]
    one = items(bai("--output", "json", "admin", "agent", "info", agent_id))[0]
    assert one["id"] == agent_id and one["status"] == "ALIVE" and one["addr"]
    header, rows = console_table(bai("admin", "agent", "list"))
    assert "Available Slots" in " ".join(header) and any(r.startswith(agent_id) for r in rows)
    assert "No matching agent" in failed(bai("admin", "agent", "info", "no-such-agent", check=False))

    presets = items(bai("--output", "json", "admin", "resource-preset", "list"))
    assert {p["name"] for p in presets} == {p["name"] for p in truth["resource_presets"]}


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
