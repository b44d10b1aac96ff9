"""The web UI's Settings page in headless Chromium against the installed node: a fresh plain user
changes their full name, generates an SSH keypair (the private key is offered once, as a download
named id_container, and never shown again), is refused a malformed keypair upload with the
manager's reason, adds, edits and deletes a dotfile (a path with ``..`` shows the manager's
refusal inline, keeps what was typed and stores nothing), saves a bootstrap script (a double
click sends one request), and changes the password (a wrong current password or two different
new ones are refused inline); the login stays valid and the new password logs in afterwards.

Every change is read back through the manager's API signed with the user's own keypair, not
through the page that made it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Api
from .webui import WebUser, admin_api, browser, login, make_user, open_page, shot, web_endpoint

__all__ = ["admin_api", "browser", "make_user", "web_endpoint"]  # fixtures, used by name

READY = "#shell-main[data-ready='/settings']"


@pytest.fixture(scope="module")
def user(make_user: Any) -> WebUser:
    made: WebUser = make_user("user", prefix="websettings")
    return made


@pytest.fixture(scope="module")
def user_api(admin_api: Api, user: WebUser) -> Api:
    """The manager's API signed with the user's own keypair (read with the admin's GraphQL)."""
    status, body = admin_api.call("POST", "/admin/gql", {
        "query": "query($email: String) { keypairs(email: $email) { access_key secret_key } }",
        "variables": {"email": user.email}})
    assert status == 200 and body["data"]["keypairs"], body
    kp = body["data"]["keypairs"][0]
    return Api({"BACKEND_ENDPOINT": admin_api.endpoint, "BACKEND_ACCESS_KEY": kp["access_key"],
                "BACKEND_SECRET_KEY": kp["secret_key"]})


@pytest.fixture
def page(browser: Any, web_endpoint: str) -> Iterator[Any]:
    p = open_page(browser, web_endpoint, accept_downloads=True)
    try:
        yield p
    finally:
        p.context.close()


def _get(api: Api, path: str) -> Any:
    status, body = api.call("GET", path)
    assert status == 200, (path, status, body)
    return body


def _open_settings(page: Any) -> None:
    page.goto("/settings")
    page.wait_for_selector(READY)


def test_settings_page_account_ssh_dotfiles_bootstrap_and_password(
        page: Any, user: WebUser, user_api: Api, admin_api: Api) -> None:
    from cryptography.hazmat.primitives import serialization
    from playwright.sync_api import expect

    broken: list[str] = []  # uncaught errors and CSP refusals (inline script, eval) on the page
    page.on("pageerror", lambda err: broken.append(str(err)))
    page.on("console", lambda m: broken.append(m.text) if "Content Security Policy" in m.text else None)
    login(page, user)
    page.click("#shell-nav a[data-menu='/settings']")
    page.wait_for_selector(READY)

    # -- account facts: never the secret key
    expect(page.locator("#account-email")).to_have_text(user.email)
    expect(page.locator("#account-role")).to_have_text("user")
    expect(page.locator("#account-domain")).to_have_text("default")
    expect(page.locator("#account-access-key")).to_have_text(user_api.ak)
    assert user_api.sk not in page.content()

    # -- full name, read back from the manager's GraphQL as the user
    page.fill("#full-name", "Ada Settings")
    page.click("#full-name-form-submit")
    expect(page.locator("#full-name-form-done")).to_have_text("Your full name is saved.")
    expect(page.locator("#account-full-name")).to_have_text("Ada Settings")
    status, me = user_api.call("POST", "/admin/gql", {"query": "query { user { full_name } }"})
    assert status == 200 and me["data"]["user"]["full_name"] == "Ada Settings", me

    # -- SSH keypair: generated, the private key downloaded once as id_container
    expect(page.locator("#ssh-none")).to_be_visible()
    page.click("#ssh-generate")
    expect(page.locator("#ssh-public-key")).to_have_text(re.compile(r"^ssh-(rsa|ed25519) \S+"))
    with page.expect_download() as got:
        page.click("#ssh-private-download")
    download = got.value
    assert download.suggested_filename == "id_container"
    private_pem = open(download.path(), "rb").read()
    stored_public = _get(user_api, "/auth/ssh-keypair")["ssh_public_key"]
    assert stored_public.strip() == page.locator("#ssh-public-key").inner_text().strip()
    derived = serialization.load_pem_private_key(private_pem, password=None).public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    assert stored_public.split()[:2] == derived.split()[:2]  # the downloaded key is the stored key's pair
    shot(page, "30-settings-ssh-private-once")
    page.click("#ssh-private-done")
    expect(page.locator("#ssh-private-key")).to_have_count(0)
    _open_settings(page)  # never shown again
    expect(page.locator("#ssh-public-key")).to_have_text(stored_public.strip())
    key_body = private_pem.decode().splitlines()[1]
    assert key_body not in page.content() and page.locator("#ssh-private-download").count() == 0

    # -- a malformed keypair upload: the manager's reason inline, the input kept, nothing stored
    page.click("#ssh-upload summary")
    page.fill("#ssh-upload-public", "not-a-key AAAA")
    page.fill("#ssh-upload-private", "nor this")
    page.click("#ssh-upload-form-submit")
    expect(page.locator("#ssh-upload-form-problem .problem-detail")).to_have_text("Malformed SSH public key")
    expect(page.locator("#ssh-upload-public")).to_have_value("not-a-key AAAA")
    assert _get(user_api, "/auth/ssh-keypair")["ssh_public_key"] == stored_public

    # -- dotfiles: a bad path refused inline (typed text kept, nothing written), create, edit, delete
    page.fill("#dotfile-path", "../x")
    page.fill("#dotfile-data", "evil\n")
    page.click("#dotfile-form-submit")
    expect(page.locator("#dotfile-form-problem .problem-detail")).to_contain_text("..")
    expect(page.locator("#dotfile-path")).to_have_value("../x")
    expect(page.locator("#dotfile-data")).to_have_value("evil\n")
    assert _get(user_api, "/user-config/dotfiles") == []
    shot(page, "31-settings-dotfile-refused")

    page.fill("#dotfile-path", ".vimrc")
    page.fill("#dotfile-permission", "600")
    page.fill("#dotfile-data", "set number\n")
    page.click("#dotfile-form-submit")
    expect(page.locator("#dotfile-form-done")).to_have_text("Created .vimrc.")
    row = page.locator("#dotfile-rows tr[data-dotfile='.vimrc']")
    expect(row).to_contain_text("600")
    expect(page.locator("#dotfile-path")).to_have_value("")  # the form is ready for the next one
    assert _get(user_api, "/user-config/dotfiles") == [{"path": ".vimrc", "permission": "600", "data": "set number\n"}]

    row.locator("button[data-action='edit']").click()
    expect(page.locator("#dotfile-form")).to_have_attribute("data-mode", "edit")
    expect(page.locator("#dotfile-path")).to_have_value(".vimrc")
    expect(page.locator("#dotfile-data")).to_have_value("set number\n")
    page.fill("#dotfile-permission", "640")
    page.fill("#dotfile-data", "set number\nsyntax on\n")
    page.click("#dotfile-form-submit")
    expect(page.locator("#dotfile-form-done")).to_have_text("Saved .vimrc.")
    expect(row).to_contain_text("640")
    assert _get(user_api, "/user-config/dotfiles?path=.vimrc") == {
        "path": ".vimrc", "permission": "640", "data": "set number\nsyntax on\n"}

    delete = row.locator("button[data-action='delete']")
    delete.click()
    delete.click()  # the confirmation
    expect(row).to_have_count(0)
    assert _get(user_api, "/user-config/dotfiles") == []

    # -- bootstrap script: a double click sends one request; read back through the API and the page
    script = "#!/bin/sh\npip install --user rich\n"
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" and r.url.endswith(
        "/func/user-config/bootstrap-script") else None)
    page.fill("#bootstrap-script", script)
    page.dblclick("#bootstrap-form-submit")
    expect(page.locator("#bootstrap-form-done")).to_have_text("Your bootstrap script is saved.")
    assert len(posts) == 1, posts
    assert _get(user_api, "/user-config/bootstrap-script") == script
    _open_settings(page)
    expect(page.locator("#bootstrap-script")).to_have_value(script)

    # -- password: refusals inline (typed text kept), then a change that keeps this login valid
    new_password = user.password + "-Changed9"
    page.fill("#password-old", user.password + "-wrong")
    page.fill("#password-new", new_password)
    page.fill("#password-new2", new_password)
    page.click("#password-form-submit")
    expect(page.locator("#password-form-problem .problem-detail")).to_have_text("Old password mismatch")
    expect(page.locator("#password-new")).to_have_value(new_password)
    page.fill("#password-old", user.password)
    page.fill("#password-new2", new_password + "x")
    page.click("#password-form-submit")
    expect(page.locator("#password-form-problem .problem-title")).to_have_text("The two new passwords differ")
    page.fill("#password-new2", new_password)
    page.click("#password-form-submit")
    expect(page.locator("#password-form-done")).to_contain_text("Your password is changed.")
    expect(page.locator("#password-old")).to_have_value("")
    shot(page, "32-settings-password-changed")
    _open_settings(page)  # still logged in

    page.click("#shell-logout")
    page.wait_for_selector("#login-bye")
    login(page, WebUser(user.email, new_password, user.role, user.uuid), next_path="/settings")
    expect(page.locator("#account-full-name")).to_have_text("Ada Settings")
    status, _ = admin_api.call("POST", "/auth/authorize", {
        "type": "keypair", "domain": "default", "username": user.email, "password": user.password})
    assert status == 401  # the old password is gone
    assert broken == [], broken
