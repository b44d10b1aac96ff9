"""The admin pages in headless Chromium against the installed node: an admin creates a user
through the UI (a double submit creates one; a duplicate shows the manager's refusal), issues a
keypair whose secret is shown once, sees every admin page (screenshots as artefacts) and the
agents' utilisation refreshing; the new user logs in in a fresh browser context, has no admin
menu, is refused the admin pages by URL, and their admin API calls through /func/ are refused by
the manager with nothing created."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Api, unique_name, wait_until
from .webui import (
    WebUser,
    admin_api,
    browser,
    keypair_api,
    login,
    make_user,
    open_page,
    purge_user,
    shot,
    web_endpoint,
)

__all__ = ["admin_api", "browser", "make_user", "web_endpoint"]  # fixtures, used by name

ADMIN_PAGES = ["/admin/users", "/admin/keypairs", "/admin/projects", "/admin/policies",
               "/admin/resource-groups", "/admin/agents"]


@pytest.fixture(scope="module")
def admin(make_user: Any) -> WebUser:
    made: WebUser = make_user("superadmin", prefix="webadmin")
    return made


@pytest.fixture(scope="module")
def ui_user(admin_api: Api) -> Iterator[WebUser]:
    """The user the admin creates through the UI (purged afterwards)."""
    user = WebUser(f"{unique_name('ui-made')}@example.com", secrets.token_urlsafe(12), "user", "")
    yield user
    # absent when the test failed before the UI made it
    purge_user(admin_api, user, missing_ok=True)


def _users_named(api: Api, email: str) -> list[dict[str, Any]]:
    status, body = api.call("POST", "/admin/gql", {
        "query": "query($f: String) { user_list(limit: 10, offset: 0, filter: $f) { items { email role status } } }",
        "variables": {"f": f'email == "{email}"'}})
    assert status == 200 and not body.get("errors"), body
    items: list[dict[str, Any]] = body["data"]["user_list"]["items"]
    return items


class _SessionApi(Api):
    name = ""


def _run_session(admin_api: Api, email: str) -> _SessionApi:
    """A RUNNING session of ``email``'s (its keypair signs); ``.name`` names it."""
    signer = keypair_api(admin_api, email)
    api = _SessionApi({"BACKEND_ENDPOINT": signer.endpoint, "BACKEND_ACCESS_KEY": signer.ak,
                       "BACKEND_SECRET_KEY": signer.sk})
    api.name = unique_name("live")
    status, body = api.call("POST", "/session", {"name": api.name, "image": "python"})
    assert status == 201, body

    def running() -> bool:
        st, info = api.call("GET", f"/session/{api.name}")
        assert st == 200 and info["status"] in ("PENDING", "SCHEDULED", "PREPARING", "PULLING", "RUNNING"), info
        return bool(info["status"] == "RUNNING")

    wait_until(running, "the session to run", 180)
    return api


@pytest.fixture
def contexts(browser: Any) -> Iterator[list[Any]]:
    opened: list[Any] = []
    yield opened
    for ctx in opened:
        ctx.close()


def _page(browser: Any, base: str, contexts: list[Any]) -> Any:
    page = open_page(browser, base)
    contexts.append(page.context)
    return page


def test_admin_creates_a_user_who_cannot_administer(browser: Any, web_endpoint: str, contexts: list[Any],
                                                     admin: WebUser, ui_user: WebUser, admin_api: Api) -> None:
    from playwright.sync_api import expect

    page = _page(browser, web_endpoint, contexts)
    login(page, admin)
    expect(page.locator("#shell-nav a[data-menu='/admin']")).to_be_visible()
    page.click("#shell-nav a[data-menu='/admin']")
    page.wait_for_selector("#shell-main[data-ready='/admin/users']")
    page.fill("#new-user-email", ui_user.email)
    page.fill("#new-user-password", ui_user.password)
    page.select_option("#new-user-role", "user")
    # a double submit sends one request: one user, no "already exists" problem
    page.locator("#new-user-form-submit").dblclick()
    expect(page.locator(f"#new-user-result [data-created='{ui_user.email}']")).to_be_visible()
    expect(page.locator("#admin-problem .problem")).to_have_count(0)
    assert [u["email"] for u in _users_named(admin_api, ui_user.email)] == [ui_user.email]
    page.fill("#user-search", ui_user.email.split("@")[0])
    page.click("#user-search-form-submit")
    expect(page.locator("#user-rows tr")).to_have_count(1)
    expect(page.locator(f"#user-rows tr[data-email='{ui_user.email}']")).to_be_visible()
    shot(page, "admin-users-created")

    # the same email again: the manager's refusal, on the page; still one user
    page.fill("#new-user-email", ui_user.email)
    page.fill("#new-user-password", ui_user.password)
    page.click("#new-user-form-submit")
    expect(page.locator("#admin-problem .problem-title")).to_have_text("The request was refused")
    expect(page.locator("#admin-problem .problem-detail")).not_to_be_empty()
    assert len(_users_named(admin_api, ui_user.email)) == 1
    shot(page, "admin-users-duplicate")

    # a keypair for the new user: the secret is shown once, never listed
    page.goto("/admin/keypairs")
    page.wait_for_selector("#shell-main[data-ready='/admin/keypairs']")
    page.fill("#new-keypair-user", ui_user.email)
    page.click("#new-keypair-form-submit")
    secret = page.locator("#new-keypair-secret").inner_text()
    access = page.locator("#new-keypair-access").inner_text()
    assert re.fullmatch(r"[A-Za-z0-9+/=_-]{20,}", secret), secret
    expect(page.locator(f"#keypair-rows tr[data-access-key='{access}']")).to_be_visible()
    shot(page, "admin-keypairs-issued")
    page.click("#new-keypair-dismiss")
    page.locator(f"#keypair-rows tr[data-access-key='{access}'] [data-action='deactivate']").click()
    expect(page.locator(f"#keypair-rows tr[data-access-key='{access}']")).to_have_attribute("data-active", "false")
    page.reload()
    page.wait_for_selector("#shell-main[data-ready='/admin/keypairs']")
    assert secret not in page.content()

    for path in ADMIN_PAGES:
        page.goto(path)
        page.wait_for_selector(f"#shell-main[data-ready='{path}']")
        shot(page, "admin-" + path.rsplit("/", 1)[1])

    # agents: the installed node's agent with its allocation and, while the admin's session runs,
    # what its containers use, refreshed while the page is open
    session = _run_session(admin_api, admin.email)
    try:
        page.goto("/admin/agents")
        page.wait_for_selector("#shell-main[data-ready='/admin/agents']")
        alive = page.locator("#agent-rows tr[data-status='ALIVE']").first
        expect(alive).to_be_visible()
        expect(alive.locator("[data-slot^='cpu']")).to_be_visible()
        expect(page.locator("#agents-refreshed")).to_have_attribute("data-refreshes", re.compile(r"^([2-9]|\d\d+)$"),
                                                                    timeout=15_000)
        measured = page.locator("#agent-rows td.live:not([data-measured='0'])")
        expect(measured.first).to_contain_text("containers: CPU", timeout=30_000)
        shot(page, "admin-agents-live")
    finally:
        session.call("DELETE", f"/session/{session.name}")

    # the new user, in a browser of their own
    user_page = _page(browser, web_endpoint, contexts)
    login(user_page, ui_user)
    expect(user_page.locator("#shell-nav a[data-menu='/sessions']")).to_be_visible()
    expect(user_page.locator("#shell-nav a[data-menu='/admin']")).to_have_count(0)
    for path in ("/admin/users", "/admin/agents", "/admin"):
        user_page.goto(path)
        expect(user_page.locator("#shell-main")).to_have_attribute("data-page", "forbidden")
        expect(user_page.locator("#shell-main .problem-title")).to_have_text("This page is for administrators")
    shot(user_page, "admin-refused-to-user")

    # their admin calls through /func/: refused by the manager, nothing created
    victim = f"{unique_name('not-made')}@example.com"
    answers = user_page.evaluate("""async (victim) => {
        const check = await (await fetch("/server/login-check")).json();
        const headers = {"Content-Type": "application/json", "X-BackendAI-CSRF-Token": check.csrf_token};
        const gql = async (query) => {
            const r = await fetch("/func/admin/gql", {method: "POST", headers, body: JSON.stringify({query})});
            return {status: r.status, body: await r.json()};
        };
        const stats = await fetch("/func/resource/stats/admin/month");
        return {
            list: await gql("query { user_list(limit: 5, offset: 0) { items { email } } }"),
            agents: await gql("query { agent_list(limit: 5, offset: 0) { items { id } } }"),
            create: await gql(`mutation { create_user(email: "${victim}", props: {password: "Passw0rd!long",
                               domain_name: "default", role: "superadmin"}) { ok msg } }`),
            stats: {status: stats.status, type: (await stats.json()).type},
        };
    }""", victim)
    for key in ("list", "agents", "create"):
        answer = answers[key]
        # GraphQL refusals are the original's: HTTP 200, the field null, the reason in errors
        assert answer["status"] == 200 and answer["body"]["errors"], answer
        assert all(v is None for v in answer["body"]["data"].values()), answer
    assert "admin privilege required" in answers["create"]["body"]["errors"][0]["message"]
    assert answers["stats"] == {"status": 403, "type": "https://api.backend.ai/probs/generic-forbidden"}, answers
    assert _users_named(admin_api, victim) == []


@pytest.fixture
def names(admin_api: Api) -> Iterator[dict[str, str]]:
    """Names for a project, a keypair policy and a resource group the test makes in the UI;
    whatever of them exists afterwards is removed."""
    made = {"project": unique_name("w3-proj"), "policy": unique_name("w3-pol"), "rg": unique_name("w3-rg")}
    yield made

    def gql(query: str, **variables: Any) -> Any:
        return admin_api.call("POST", "/admin/gql", {"query": query, "variables": variables})[1]

    groups = gql('query { groups(domain_name: "default") { id name } }')["data"]["groups"] or []
    for g in (g for g in groups if g["name"] == made["project"]):
        gql("mutation($sg: String!, $g: UUID!) { disassociate_scaling_group_with_user_group(scaling_group: $sg, "
            "user_group: $g) { ok } }", sg=made["rg"], g=g["id"])
        gql("mutation($g: UUID!) { delete_group(gid: $g) { ok } }", g=g["id"])
        gql("mutation($g: UUID!) { purge_group(gid: $g) { ok } }", g=g["id"])
    gql("mutation($n: String!) { delete_scaling_group(name: $n) { ok } }", n=made["rg"])
    gql("mutation($n: String!) { delete_keypair_resource_policy(name: $n) { ok } }", n=made["policy"])


def test_admin_manages_projects_policies_and_resource_groups(browser: Any, web_endpoint: str, contexts: list[Any],
                                                             admin: WebUser, make_user: Any,
                                                             names: dict[str, str]) -> None:
    from playwright.sync_api import expect

    member: WebUser = make_user("user", prefix="w3-member")
    page = _page(browser, web_endpoint, contexts)
    login(page, admin, "/admin/projects")
    page.wait_for_selector("#shell-main[data-ready='/admin/projects']")
    page.fill("#new-project-name", names["project"])
    page.fill("#new-project-description", "made in the browser")
    page.click("#new-project-form-submit")
    project = page.locator(f"#project-rows tr[data-project='{names['project']}']")
    expect(project).to_be_visible()
    project.locator("[data-action='members']").click()
    project.locator("input[name='email']").fill(member.email)
    project.locator("button[type='submit']").click()
    expect(project.locator(f"li[data-member='{member.email}']")).to_be_visible()
    shot(page, "admin-projects-member")

    # a policy the manager refuses (a slot amount that is not a number): its reason on the page
    page.goto("/admin/policies")
    page.wait_for_selector("#shell-main[data-ready='/admin/policies']")
    page.fill("#new-kp-policy-name", names["policy"])
    page.fill("#new-kp-policy-cpu", "lots")
    page.click("#new-kp-policy-form-submit")
    expect(page.locator("#admin-problem .problem")).to_be_visible()
    expect(page.locator(f"#kp-policy-rows tr[data-policy='{names['policy']}']")).to_have_count(0)
    page.fill("#new-kp-policy-cpu", "2")
    page.fill("#new-kp-policy-mem", "2g")
    page.click("#new-kp-policy-form-submit")
    policy = page.locator(f"#kp-policy-rows tr[data-policy='{names['policy']}']")
    expect(policy).to_contain_text("cpu 2 · mem 2.0 GiB")
    shot(page, "admin-policies-created")

    # a resource group the new project may use: still allowed after a reload
    page.goto("/admin/resource-groups")
    page.wait_for_selector("#shell-main[data-ready='/admin/resource-groups']")
    page.fill("#new-rg-name", names["rg"])
    page.click("#new-rg-form-submit")
    rg = page.locator(f"#rg-rows tr[data-rg='{names['rg']}']")
    expect(rg).to_be_visible()
    allow = rg.locator(f"input[data-project='{names['project']}']")
    allow.check()
    expect(allow).to_be_enabled()  # the association call has answered
    page.reload()
    page.wait_for_selector("#shell-main[data-ready='/admin/resource-groups']")
    expect(page.locator(f"#rg-rows tr[data-rg='{names['rg']}'] input[data-project='{names['project']}']")).to_be_checked()
    expect(page.locator("#admin-problem .problem")).to_have_count(0)
    shot(page, "admin-resource-groups-created")


def test_domain_admin_pages(browser: Any, web_endpoint: str, contexts: list[Any], make_user: Any) -> None:
    """A domain admin manages their domain's users and projects; resource groups and agents are
    the superadmin's: their tabs are hidden and their pages refuse the domain admin."""
    from playwright.sync_api import expect

    domain_admin: WebUser = make_user("admin", prefix="w3-domadmin")
    page = _page(browser, web_endpoint, contexts)
    login(page, domain_admin, "/admin/users")
    page.wait_for_selector("#shell-main[data-ready='/admin/users']")
    # they may grant user and admin only
    assert page.locator("#new-user-role option").all_inner_texts() == ["user", "admin"]
    expect(page.locator(f"#user-rows tr[data-email='{domain_admin.email}']")).to_be_visible()
    page.goto("/admin/projects")
    page.wait_for_selector("#shell-main[data-ready='/admin/projects']")
    expect(page.locator("#project-rows tr[data-project='default']")).to_be_visible()
    page.goto("/admin/resource-groups")
    expect(page.locator("#shell-main .problem-detail")).to_contain_text("superadmin privilege required")
    shot(page, "admin-domain-admin-refused-resource-groups")
