"""The web UI's images page, "Save as image" and moving agents, in headless Chromium against the
installed node. A plain user saves their running session as an image from the session page (the
background task is followed to the new image's reference, whose link preselects it on the new
session form), finds it on the images page marked as theirs and forgets it there (gone through
the API too). A superadmin moves the installed agent to a new resource group and back on the
agents page (agent.toml follows; it ends in `default` whatever happens), and a move to a group
deleted meanwhile shows the manager's refusal inline, as does a rescan of an unknown registry."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from .conftest import Api, unique_name, wait_until
from .webui import WebUser, admin_api, browser, login, make_user, open_page, shot, web_endpoint

__all__ = ["admin_api", "browser", "make_user", "web_endpoint"]  # fixtures, used by name

AGENT_TOML = Path("/etc/backend.ai/agent.toml")
HOME_GROUP = "default"
_CUSTOMIZED = re.compile(r"^\S+/\S+:\S+-customized_[0-9a-f]{32}$")


def _gql(api: Api, query: str, **variables: Any) -> dict[str, Any]:
    status, body = api.call("POST", "/admin/gql", {"query": query, "variables": variables})
    assert status == 200 and not body.get("errors"), body
    data: dict[str, Any] = body["data"]
    return data


def _keypair_api(admin_api: Api, email: str) -> Api:
    kp = _gql(admin_api, "query($email: String) { keypairs(email: $email) { access_key secret_key } }",
              email=email)["keypairs"][0]
    return Api({"BACKEND_ENDPOINT": admin_api.endpoint, "BACKEND_ACCESS_KEY": kp["access_key"],
                "BACKEND_SECRET_KEY": kp["secret_key"]})


def _customized(api: Api) -> list[str]:
    items = _gql(api, "query { customized_images { name tag registry } }")["customized_images"]
    return [f"{i['registry']}/{i['name']}:{i['tag']}" for i in items]


def _ready(page: Any, path: str) -> None:
    """The page at `path` rendered; else what is on the screen instead, in the failure."""
    try:
        page.wait_for_selector(f"#shell-main[data-ready='{path}']", timeout=20_000)
    except Exception as exc:
        main = page.eval_on_selector("#shell-main", "(m) => JSON.stringify({...m.dataset}) + ' ' + m.innerText.slice(0, 800)")
        raise AssertionError(f"{path} did not render at {page.url}: {main}") from exc


def _in_docker(reference: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", reference], capture_output=True, timeout=60).returncode == 0


def test_save_session_as_image_then_forget_it(browser: Any, web_endpoint: str, make_user: Any, admin_api: Api) -> None:
    user: WebUser = make_user("user", prefix="webimg")
    api = _keypair_api(admin_api, user.email)
    name, image_name = unique_name("img"), unique_name("saved")
    status, created = api.call("POST", "/session", {"name": name, "image": "python"})
    assert status == 201, created
    session_id = created["sessionId"]
    reference = ""
    page = open_page(browser, web_endpoint)
    try:
        def running() -> bool:
            st, info = api.call("GET", f"/session/{name}")
            assert st == 200 and info["status"] not in ("ERROR", "TERMINATED", "CANCELLED"), info
            return bool(info["status"] == "RUNNING")

        wait_until(running, "the session to run", 180)
        login(page, user, next_path=f"/sessions/{session_id}")
        page.wait_for_selector("#session-imagify:not([hidden])")
        # A name the manager refuses: its problem shows inline, nothing starts.
        page.fill("#imagify-name", "no spaces allowed")
        page.evaluate("document.getElementById('imagify-name').removeAttribute('pattern')")
        page.click("#imagify-submit")
        assert "image_name" in page.text_content("#imagify-problem .problem", timeout=10_000)

        page.fill("#imagify-name", image_name)
        # The button is disabled from the click until the task ends (one commit per click).
        page.evaluate("""() => { const b = document.getElementById('imagify-submit'); window.sawDisabled = false;
            new MutationObserver(() => { window.sawDisabled ||= b.disabled; }).observe(b, {attributes: true}); }""")
        page.click("#imagify-submit")
        reference = page.text_content("#imagify-reference", timeout=150_000).strip()
        assert _CUSTOMIZED.match(reference), reference
        assert not page.is_disabled("#imagify-submit") and page.evaluate("window.sawDisabled")
        shot(page, "session-saved-as-image")
        assert reference in _customized(api)

        page.click("#imagify-start")
        _ready(page, "/sessions/new")
        assert page.input_value("#new-image") == reference

        # The images page: the new image marked as the user's own, with its name.
        page.click("nav a[data-menu='/images']")
        _ready(page, "/images")
        row = page.wait_for_selector(f"tr[data-image='{reference}'][data-mine='1']")
        assert image_name in row.inner_text()
        assert page.query_selector("tr[data-mine='0']") is not None  # the stock images are listed too
        assert page.query_selector("#rescan-form") is None  # rescans are for superadmins
        shot(page, "images-page")

        # The session goes first: the agent keeps an image a container uses (the forget says so).
        api.call("DELETE", f"/session/{name}")
        forget = row.query_selector("button[data-action='forget']")
        assert forget is not None
        forget.click()
        assert page.text_content(f"tr[data-image='{reference}'] button[data-action='forget']") == "Really forget?"
        forget.click()
        page.wait_for_selector("#images-notice .notice")
        assert reference in page.text_content("#images-notice")
        page.wait_for_selector(f"tr[data-image='{reference}']", state="detached")
        assert reference not in _customized(api)
        assert not _in_docker(reference)  # removed from the agent too: no heartbeat brings it back
        reference = ""
    finally:
        page.context.close()
        api.call("DELETE", f"/session/{name}?forced=true")
        if reference:
            subprocess.run(["docker", "rmi", "-f", reference], capture_output=True, timeout=60)
            for item in _gql(api, "query { customized_images { id name tag registry } }")["customized_images"]:
                if f"{item['registry']}/{item['name']}:{item['tag']}" == reference:
                    _gql(api, "mutation($id: String!) { forget_image_by_id(image_id: $id) { ok msg } }", id=item["id"])


def _agent_id() -> str:
    return str(tomllib.loads(AGENT_TOML.read_text())["agent"]["id"])


def _toml_group() -> str:
    return str(tomllib.loads(AGENT_TOML.read_text())["agent"]["scaling-group"])


def _agent_group(api: Api, agent_id: str) -> str:
    agent = _gql(api, "query($id: String!) { agent(agent_id: $id) { scaling_group } }", id=agent_id)["agent"]
    return str(agent["scaling_group"])


@pytest.fixture
def spare_group(admin_api: Api) -> Any:
    """A new resource group; the installed agent ends in `default` and the group is deleted."""
    agent_id = _agent_id()
    assert _agent_group(admin_api, agent_id) == HOME_GROUP == _toml_group()
    name = unique_name("webimg-rg")
    made = _gql(admin_api, """mutation($n: String!) { create_scaling_group(name: $n,
        props: {description: "test_web_images", driver: "static", scheduler: "fifo"}) { ok msg } }""", n=name)
    assert made["create_scaling_group"]["ok"], made
    try:
        yield name
    finally:
        if _agent_group(admin_api, agent_id) != HOME_GROUP:
            back = _gql(admin_api, """mutation($id: String!) {
                modify_agent(id: $id, props: {scaling_group: "default"}) { ok msg } }""", id=agent_id)
            assert back["modify_agent"]["ok"], back
        _gql(admin_api, "mutation($n: String!) { delete_scaling_group(name: $n) { ok msg } }", n=name)
        assert _agent_group(admin_api, agent_id) == HOME_GROUP
        assert _toml_group() == HOME_GROUP


def test_admin_moves_the_agent_between_resource_groups(browser: Any, web_endpoint: str, make_user: Any,
                                                       admin_api: Api, spare_group: str) -> None:
    admin: WebUser = make_user("superadmin", prefix="webimg-adm")
    agent_id = _agent_id()
    page = open_page(browser, web_endpoint)
    try:
        login(page, admin, next_path="/admin/agents")
        row = f"tr[data-agent='{agent_id}']"

        def move(group: str) -> None:
            page.select_option(f"{row} select.agent-group-select", group)
            page.click(f"{row} button[data-action='move']")
            page.wait_for_function("(g) => document.getElementById('agents-notice').textContent.includes('moved to ' + g)",
                                   arg=group)

        move(spare_group)
        assert _agent_group(admin_api, agent_id) == spare_group
        assert _toml_group() == spare_group  # the agent keeps the group for its restarts
        assert spare_group in page.text_content(f"{row} td.agent-group")
        shot(page, "agents-moved")
        move(HOME_GROUP)
        assert _agent_group(admin_api, agent_id) == HOME_GROUP == _toml_group()

        # A group picked, then deleted before the click: the manager's refusal, shown inline.
        page.select_option(f"{row} select.agent-group-select", spare_group)
        # Still offered after the page's next refresh (the pick outlives the group list).
        page.evaluate("document.activeElement?.blur()")  # the page holds its refresh under an open list
        stamp = page.get_attribute("#agents-refreshed", "data-refreshes")
        gone = _gql(admin_api, "mutation($n: String!) { delete_scaling_group(name: $n) { ok msg } }", n=spare_group)
        assert gone["delete_scaling_group"]["ok"], gone
        page.wait_for_function("(n) => document.getElementById('agents-refreshed').dataset.refreshes !== n", arg=stamp)
        assert page.input_value(f"{row} select.agent-group-select") == spare_group
        page.click(f"{row} button[data-action='move']")
        refusal = page.text_content("#admin-problem .problem", timeout=10_000)
        assert "No such scaling group" in refusal and spare_group in refusal, refusal
        assert _agent_group(admin_api, agent_id) == HOME_GROUP

        # The images page's rescan (superadmins): the manager's refusal of an unknown registry inline.
        page.click("nav a[data-menu='/images']")
        _ready(page, "/images")
        page.fill("#rescan-registry", "no-such-registry.example")
        page.click("#rescan-submit")
        refusal = page.text_content("#images-problem .problem", timeout=10_000)
        assert "no-such-registry.example" in refusal, refusal
    finally:
        page.context.close()
