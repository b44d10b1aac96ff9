"""The web UI in headless Chromium, against the installed node (manager, agent, storage proxy, app
proxy) and the webserver (installed, or started by ``web_endpoint``): what a user does in a
browser, end to end, with screenshots of each page kept as artefacts (see webui.ARTEFACTS).

A fresh non-admin user (random password) logs in, uploads a file to a new folder (a cancelled
upload shows nothing, and uploading again resumes it), starts a session that mounts the folder
(a double click sends one request), sees it RUNNING in the live list, runs code in the in-browser
terminal and reads the uploaded file there, opens JupyterLab through the app proxy, and logs out
(the old cookie is refused afterwards)."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Api, unique_name, wait_until
from .webui import WebUser, admin_api, browser, keypair_api, login, make_user, open_page, shot, web_endpoint

__all__ = ["admin_api", "browser", "make_user", "web_endpoint"]  # fixtures, used by name

TERMINAL_ROWS = "#session-terminal .xterm-accessibility-tree"


@pytest.fixture(scope="module")
def user(make_user: Any) -> WebUser:
    made: WebUser = make_user("user")
    return made


@pytest.fixture
def page(browser: Any, web_endpoint: str) -> Iterator[Any]:
    p = open_page(browser, web_endpoint)
    try:
        yield p
    finally:
        p.context.close()


def _sessions_of(api: Api, email: str) -> list[dict[str, Any]]:
    status, body = api.call("POST", "/admin/gql", {"query": """query {
        compute_session_list(limit: 100, offset: 0, status: "PENDING,SCHEDULED,PULLING,PREPARING,RUNNING,TERMINATING") {
          items { session_id name status user_email } } }"""})
    assert status == 200, body
    return [s for s in body["data"]["compute_session_list"]["items"] if s["user_email"] == email]


def _func_status(base: str, path: str, cookies: list[dict[str, Any]]) -> int:
    header = "; ".join(f"{c['name']}={c['value']}" for c in cookies)
    req = urllib.request.Request(base + "/func" + path, headers={"Cookie": header})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _terminal_text(page: Any) -> str:
    return str(page.locator(TERMINAL_ROWS).inner_text())


def test_login_refuses_a_wrong_password_clearly(page: Any, user: WebUser) -> None:
    from playwright.sync_api import expect

    page.goto("/sessions")  # not logged in: the login page, which will lead back here
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fsessions$"))
    page.fill("#login-email", user.email)
    page.fill("#login-password", user.password + "-wrong")
    page.click("#login-submit")
    expect(page.locator("#login-problem .problem-title")).to_have_text("Wrong email or password")
    shot(page, "01-login-wrong-password")
    page.fill("#login-password", user.password)
    page.click("#login-submit")
    page.wait_for_selector("#shell-main[data-ready='/sessions']")
    expect(page.locator("#login-problem")).to_have_count(0)
    # a non-admin sees no admin menu entries
    assert page.locator("#shell-nav a[data-menu^='/admin']").count() == 0


def test_user_uploads_starts_a_session_uses_terminal_and_jupyter_and_logs_out(
        page: Any, user: WebUser, admin_api: Api, web_endpoint: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    login(page, user)
    # -- the live session list
    expect(page.locator("#session-live")).to_have_attribute("data-mode", "live")
    expect(page.locator("#session-list")).to_have_attribute("data-loaded", "1")
    shot(page, "02-sessions-empty")

    # -- a folder, a cancelled upload (nothing shows), then the whole file
    folder = unique_name("webdata")
    page.click("#shell-nav a[data-menu='/folders']")
    page.fill("#new-folder-name", folder)
    page.click("#new-folder-form button[type=submit]")
    page.click(f"#folder-rows tr[data-folder='{folder}'] a")
    page.wait_for_selector("#shell-main[data-ready='/folders/:name']")
    payload = tmp_path / "hello.txt"
    payload.write_bytes(b"hello from the browser " + b"x" * (6 * 2**20) + b"\n")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
             "downloadThroughput": -1, "uploadThroughput": 2 * 2**20})  # 2 MiB/s: 3 s for the file
    page.set_input_files("#upload-input", str(payload))
    page.click("#upload-start")
    page.wait_for_function("() => Number(document.querySelector('#uploads li')?.dataset.sent || 0) > 0")
    page.click("#uploads li[data-state='running'] button[data-action='cancel']")
    expect(page.locator("#uploads li").first).to_have_attribute("data-state", "cancelled")
    page.reload()
    page.wait_for_selector("#shell-main[data-ready='/folders/:name']")
    assert page.locator("#file-rows tr[data-file='hello.txt']").count() == 0  # no half file shown
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
             "downloadThroughput": -1, "uploadThroughput": -1})
    cdp.detach()  # no emulation left behind
    page.set_input_files("#upload-input", str(payload))
    page.click("#upload-start")
    expect(page.locator("#uploads li").first).to_have_attribute("data-state", "done", timeout=30_000)
    assert int(page.locator("#uploads li").first.get_attribute("data-started-at")) > 0  # resumed, not restarted
    expect(page.locator("#file-rows tr[data-file='hello.txt']")).to_have_count(1)
    shot(page, "03-folder-uploaded")

    # -- start a session mounting the folder; a double click sends one request
    page.click("#shell-nav a[data-menu='/sessions']")
    page.click("#new-session")
    page.wait_for_selector("#shell-main[data-ready='/sessions/new']")
    name = unique_name("websess")
    page.select_option("#new-image", "python")
    page.fill("#new-name", name)
    page.check(f"#new-mounts input[value='{folder}']")
    shot(page, "04-session-new")
    page.dblclick("#new-submit")
    page.wait_for_selector("#shell-main[data-ready='/sessions/:ref']")
    expect(page.locator("#session-status")).to_have_attribute("data-status", "RUNNING", timeout=60_000)
    assert [s["name"] for s in _sessions_of(admin_api, user.email)] == [name]

    # -- the terminal: the shell computes 42 and reads the uploaded file from the mounted folder
    page.click("#open-terminal")
    expect(page.locator("#terminal-state")).to_have_attribute("data-state", "open")
    expect(page.locator(TERMINAL_ROWS)).to_contain_text("$", timeout=30_000)
    page.locator("#session-terminal").click()
    page.keyboard.type(f"echo bai-$((6*7)); head -c 23 {folder}/hello.txt; echo\n")
    expect(page.locator(TERMINAL_ROWS)).to_contain_text("bai-42", timeout=20_000)
    expect(page.locator(TERMINAL_ROWS)).to_contain_text("hello from the browser", timeout=20_000)
    assert "bai-$((6*7))" in _terminal_text(page)  # the echo of what was typed, then its result
    shot(page, "05-session-terminal")

    # -- the live list shows it RUNNING
    page.click("#shell-nav a[data-menu='/sessions']")
    row = page.locator(f"#session-rows tr[data-session-name='{name}']")
    expect(row).to_have_attribute("data-status", "RUNNING")
    shot(page, "06-sessions-running")
    # destroyed from the list (a second click confirms); it leaves the list live
    row.locator("button[data-action='destroy']").click()
    row.locator("button[data-action='destroy'].armed").click()
    expect(row).to_have_count(0, timeout=30_000)

    # -- JupyterLab through the app proxy, in a new tab
    page.click("#new-session")
    page.wait_for_selector("#shell-main[data-ready='/sessions/new']")
    page.select_option("#new-image", "python-jupyter")
    page.click("#new-submit")
    page.wait_for_selector("#shell-main[data-ready='/sessions/:ref']")
    expect(page.locator("#session-status")).to_have_attribute("data-status", "RUNNING", timeout=60_000)
    with page.context.expect_page() as tab_info:
        page.click("#session-apps button[data-app='jupyter']")
    tab = tab_info.value
    tab.set_default_timeout(60_000)
    try:
        tab.locator('.jp-LauncherCard[data-category="Notebook"]').first.wait_for()
    except Exception as exc:  # the tab is closed when start-service is refused: say why
        raise AssertionError(f"JupyterLab did not open: {page.locator('#session-problem').inner_text()}") from exc
    shot(tab, "07-jupyterlab")
    tab.close()
    page.click("#show-logs")
    expect(page.locator("#session-logs")).to_be_visible()

    # -- logout: the page says so, and the old cookie no longer opens /func/
    cookies = page.context.cookies()
    assert _func_status(web_endpoint, "/folders", cookies) == 200
    page.click("#shell-logout")
    expect(page.locator("#login-bye")).to_be_visible()
    shot(page, "08-logged-out")
    assert _func_status(web_endpoint, "/folders", cookies) == 401
    page.goto("/folders")
    expect(page).to_have_url(re.compile(r"/login\?"))

    # The JupyterLab session ends here: the user lives on (module-wide), and a session left
    # running would hold the node's slots from the tests after this one.
    owner = keypair_api(admin_api, user.email)
    for left in _sessions_of(admin_api, user.email):
        assert owner.call("DELETE", f"/session/{left['name']}")[0] in (200, 404)
    wait_until(lambda: not _sessions_of(admin_api, user.email), "the user's sessions to end")


def test_session_refusal_shows_the_problem(page: Any, user: WebUser, admin_api: Api) -> None:
    """The manager's refusal (an impossible amount of memory) is shown as its title and detail,
    and nothing is created."""
    from playwright.sync_api import expect

    login(page, user, next_path="/sessions/new")
    page.wait_for_selector("#shell-main[data-ready='/sessions/new']")
    before = {s["session_id"] for s in _sessions_of(admin_api, user.email)}
    page.fill("#new-name", unique_name("toobig"))
    page.fill("#new-mem", "64t")
    page.click("#new-submit")
    problem = page.locator("#new-session-problem .problem")
    expect(problem.locator(".problem-title")).to_have_text("Missing or invalid API parameters.")
    expect(problem.locator(".problem-detail")).to_contain_text("mem: 64t")
    expect(page.locator("#new-submit")).to_be_enabled()  # the form can be corrected and sent again
    shot(page, "09-session-refused")
    assert {s["session_id"] for s in _sessions_of(admin_api, user.email)} == before


def test_expired_login_leads_to_the_login_page_and_back(page: Any, user: WebUser) -> None:
    """A login that ends elsewhere (here: its cookie gone) is noticed at the next call: the login
    page says it expired, and logging in again returns to the page the user was on."""
    from playwright.sync_api import expect

    login(page, user, next_path="/folders")
    page.wait_for_selector("#shell-main[data-ready='/folders']")
    page.context.clear_cookies()
    page.click("#shell-nav a[data-menu='/sessions']")
    expect(page.locator("#login-problem .problem-title")).to_have_text("Your login has expired")
    expect(page).to_have_url(re.compile(r"/login\?expired=1&next=%2Fsessions$"))
    shot(page, "10-login-expired")
    page.fill("#login-email", user.email)
    page.fill("#login-password", user.password)
    page.click("#login-submit")
    page.wait_for_selector("#shell-main[data-ready='/sessions']")


def test_folder_share_invitation_mkdir_rename_download_delete(browser: Any, web_endpoint: str, make_user: Any,
                                                              tmp_path: Path) -> None:
    """One user makes a directory, uploads (one upload survives a dropped connection), renames and
    downloads a file, and shares the folder;
    the other accepts the invitation and sees the files read-only (no write actions offered);
    the owner deletes the file."""
    from playwright.sync_api import expect

    owner, guest = make_user("user"), make_user("user")
    folder = unique_name("shared")
    a = open_page(browser, web_endpoint, accept_downloads=True)
    b = open_page(browser, web_endpoint)
    try:
        login(a, owner, next_path="/folders")
        a.fill("#new-folder-name", folder)
        a.click("#new-folder-form button[type=submit]")
        a.click(f"#folder-rows tr[data-folder='{folder}'] a")
        a.wait_for_selector("#shell-main[data-ready='/folders/:name']")
        a.fill("#mkdir-name", "results")
        a.click("#mkdir-form button[type=submit]")
        expect(a.locator("#file-rows tr[data-file='results'][data-type='DIRECTORY']")).to_have_count(1)
        src = tmp_path / "notes.txt"
        src.write_text("forty-two\n")
        a.set_input_files("#upload-input", str(src))
        a.click("#upload-start")
        expect(a.locator("#file-rows tr[data-file='notes.txt']")).to_have_count(1)
        # the connection drops between two chunks (8 MiB each; emulated offline: the next request
        # fails): the upload backs off, asks the proxy where it stands once back, and goes on
        big = tmp_path / "big.bin"
        big.write_bytes(b"\x01" * (9 * 2**20))
        cdp = a.context.new_cdp_session(a)
        cdp.send("Network.enable")
        throttle = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 8 * 2**20}
        cdp.send("Network.emulateNetworkConditions", throttle)
        a.set_input_files("#upload-input", str(big))
        a.click("#upload-start")
        item = a.locator("#uploads li[data-upload='big.bin']")
        a.wait_for_function("() => Number(document.querySelector('#uploads li[data-upload=\"big.bin\"]')?.dataset.sent || 0) > 0")
        cdp.send("Network.emulateNetworkConditions", {**throttle, "offline": True})
        expect(item).to_have_attribute("data-retries", re.compile(r"[1-9]"), timeout=15_000)
        cdp.send("Network.emulateNetworkConditions", {**throttle, "offline": False, "uploadThroughput": -1})
        cdp.detach()  # no emulation left behind
        expect(item).to_have_attribute("data-state", "done", timeout=30_000)
        assert item.get_attribute("data-started-at") == "0"  # one upload throughout, resumed in place
        expect(a.locator("#file-rows tr[data-file='big.bin']")).to_contain_text("9.0 MiB")
        a.click("#file-rows tr[data-file='notes.txt'] button[data-action='rename']")
        a.fill("#file-rows tr[data-file='notes.txt'] input[name=new_name]", "answer.txt")
        a.click("#file-rows tr[data-file='notes.txt'] button[type=submit]")
        expect(a.locator("#file-rows tr[data-file='answer.txt']")).to_have_count(1)
        with a.expect_download() as dl:
            a.click("#file-rows tr[data-file='answer.txt'] button[data-action='download']")
        assert Path(dl.value.path()).read_text() == "forty-two\n"
        shot(a, "11-folder-browse")

        a.click("#shell-nav a[data-menu='/folders']")
        row = a.locator(f"#folder-rows tr[data-folder='{folder}']")
        row.locator("button[data-action='share']").click()
        row.locator("input[name=email]").fill(guest.email)
        row.locator("select[name=perm]").select_option("ro")
        row.locator("button[type=submit]").click()
        expect(row).to_contain_text(f"Invited {guest.email}")

        login(b, guest, next_path="/folders")
        invitation = b.locator(f"#invitations li[data-folder='{folder}']")
        expect(invitation).to_contain_text(owner.email)
        shot(b, "12-folders-invitation")
        invitation.locator("button[data-action='accept']").click()
        shared = b.locator(f"#folder-rows tr[data-folder='{folder}']")
        expect(shared).to_contain_text("ro")
        shared.locator("a").click()
        expect(b.locator("#file-rows tr[data-file='answer.txt']")).to_have_count(1)
        expect(b.locator("#shell-main")).to_have_attribute("data-permission", "ro")
        expect(b.locator("#file-rows tr[data-file='answer.txt'] button[data-action='delete']")).to_have_count(0)
        expect(b.locator("#upload-start")).to_be_hidden()

        a.click(f"#folder-rows tr[data-folder='{folder}'] a")
        a.wait_for_selector("#shell-main[data-ready='/folders/:name']")
        a.click("#file-rows tr[data-file='answer.txt'] button[data-action='delete']")
        a.click("#file-rows tr[data-file='answer.txt'] button[data-action='delete'].armed")
        expect(a.locator("#file-rows tr[data-file='answer.txt']")).to_have_count(0)
    finally:
        a.context.close()
        b.context.close()


def test_admin_sees_and_ends_another_users_session(browser: Any, web_endpoint: str, make_user: Any,
                                                   user: WebUser, admin_api: Api) -> None:
    """A superadmin's list names the owner of a user's session; its page opens the terminal and
    the logs on the owner's behalf, and destroys it."""
    from playwright.sync_api import expect

    boss = make_user("superadmin")
    as_user = keypair_api(admin_api, user.email)
    name = unique_name("owned")
    status, created = as_user.call("POST", "/session", {"name": name, "image": "python"})
    assert status == 201 and created["status"] == "RUNNING", created
    page = open_page(browser, web_endpoint)
    try:
        login(page, boss, next_path="/sessions")
        row = page.locator(f"#session-rows tr[data-session-name='{name}']")
        expect(row).to_contain_text(user.email)
        row.locator("a.session-link").click()
        expect(page.locator("#session-status")).to_have_attribute("data-status", "RUNNING")
        page.click("#open-terminal")
        expect(page.locator(TERMINAL_ROWS)).to_contain_text("work@", timeout=30_000)  # the owner's kernel user
        page.click("#show-logs")
        expect(page.locator("#session-logs")).to_be_visible()
        page.click("#destroy-session")
        page.click("#destroy-session")
        page.wait_for_selector("#shell-main[data-ready='/sessions']")
        wait_until(lambda: name not in [s["name"] for s in _sessions_of(admin_api, user.email)], "the session to end")
    finally:
        page.context.close()
