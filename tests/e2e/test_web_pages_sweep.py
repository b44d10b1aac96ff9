"""Every page of the web UI, for a superadmin, a domain admin and a plain user, loads without a
browser error.

The routes are read from static/routes.js at test time, so a new page is covered without editing
this file; a route with a parameter gets an object made here (one folder per user, one session
of the plain user's that every user opens). On each page: no uncaught exception, no console
error, no /func/ call answered 5xx, no 4xx, no problem box (a GraphQL refusal comes as a 200
with `errors`, which only the page shows), and no link to a page the user may not open. A page
a role may not open (routes.js: `admin: true`, `roles: [...]`) is refused by the UI itself (a
"Not allowed" page, no call made): the admin pages for a plain user, the resource groups and
agents (which the manager lists to superadmins and monitors only) for a domain admin.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from .conftest import Api, unique_name, wait_until
from .webui import WebUser, admin_api, browser, keypair_api, login, make_user, open_page, shot, web_endpoint

__all__ = ["admin_api", "browser", "make_user", "web_endpoint"]  # fixtures, used by name

ROUTES_JS = Path(__file__).resolve().parents[2] / "components/bai/webserver/static/routes.js"
# One route table entry per line: {path: "...", [admin: true,] [roles: [...],] [redirect: "...",] ...}
ROUTE = re.compile(r'\{\s*path:\s*"(?P<path>[^"]+)"(?P<rest>[^\n]*)\}')
SETTLE_TIMEOUT_MS = 10_000
QUIET_MS = 120  # no fetch in flight for this long after the page said it is ready: it has settled

# Counts the page's fetches (every /func/ and /server/ call goes through fetch) so the test can
# wait for a page to settle on a condition: no call in flight, none for QUIET_MS. Event streams
# (EventSource) stay open and are not counted.
INFLIGHT_JS = """(() => {
  let inflight = 0;
  let last = performance.now();
  const fetch = window.fetch;
  window.fetch = function (...args) {
    inflight += 1;
    last = performance.now();
    const done = () => { inflight -= 1; last = performance.now(); };
    // a call is over once its body has arrived, not its headers
    return fetch.apply(this, args).then((resp) => { resp.clone().arrayBuffer().then(done, done); return resp; },
                                        (err) => { done(); throw err; });
  };
  window.__baiSettled = (ms) => inflight === 0 && performance.now() - last >= ms;
})();"""

SETTLED_JS = """([mark, value, ms]) => {
  const main = document.getElementById("shell-main");
  return !!main && main.dataset[mark] === value && window.__baiSettled(ms);
}"""


ADMIN_ROLES = {"superadmin", "admin", "monitor"}  # lib/auth.js's isAdmin


@dataclass(frozen=True)
class Route:
    path: str
    admin: bool = False
    redirect: str = ""
    roles: tuple[str, ...] = ()

    def may_open(self, role: str) -> bool:
        return (not self.admin or role in ADMIN_ROLES) and (not self.roles or role in self.roles)

    def matches(self, path: str) -> bool:
        return re.fullmatch(re.sub(r":[A-Za-z_]+", "[^/]+", self.path) + "/?", path) is not None


def routes() -> list[Route]:
    found = []
    for m in ROUTE.finditer(ROUTES_JS.read_text()):
        redirect = re.search(r'redirect:\s*"([^"]+)"', m["rest"])
        roles = re.search(r"roles:\s*\[([^\]]*)\]", m["rest"])
        found.append(Route(m["path"], "admin: true" in m["rest"], redirect[1] if redirect else "",
                           tuple(re.findall(r'"([^"]+)"', roles[1])) if roles else ()))
    assert len(found) > 10, f"routes.js was not understood: {found}"
    return found


@dataclass
class Watch:
    """What went wrong on the page since the last take()."""

    problems: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("pageerror", lambda exc: self.problems.append(f"uncaught exception: {exc}"))
        page.on("console", self._console)
        page.on("response", self._response)

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.problems.append(f"console error: {msg.text} ({msg.location.get('url', '')})")

    def _response(self, resp: Any) -> None:
        path = resp.url.split("://", 1)[-1].partition("/")[2]
        if path.startswith("func/") and resp.status >= 400:
            self.problems.append(f"{resp.request.method} /{path} answered {resp.status}: {_body(resp)}")

    def take(self) -> list[str]:
        out, self.problems = self.problems, []
        return out


def _body(resp: Any) -> str:
    try:
        return str(resp.text())[:300]
    except Exception as exc:  # an event stream's body never ends; a cut one cannot be read
        return f"(body unreadable: {type(exc).__name__})"


def _manager_answers(api: Api) -> bool:
    try:
        return api.call("GET", "/")[0] == 200
    except OSError:
        return False


def _folder_of(admin_api: Api, user: WebUser) -> str:
    name = unique_name("sweep")
    status, body = keypair_api(admin_api, user.email).call("POST", "/folders", {"name": name})
    assert status == 201, body
    return name


ROLES = ["superadmin", "admin", "user"]


@dataclass(frozen=True)
class Subjects:
    users: dict[str, WebUser]  # role -> a user of that role
    folders: dict[str, str]  # email -> a folder of theirs
    session_id: str  # the plain user's


@pytest.fixture(scope="module")
def subjects(make_user: Any, admin_api: Api) -> Iterator[Subjects]:
    users: dict[str, WebUser] = {role: make_user(role, prefix=f"sweep-{role}") for role in ROLES}
    # One session for /sessions/:ref, started (not waited for: any state is a page to show) and
    # ended with this module: the users live on to the end of the run (make_user is session-wide)
    # and a session left running would hold a node's slots from the tests after this one.
    as_user, name = keypair_api(admin_api, users["user"].email), unique_name("sweep")
    status, body = as_user.call("POST", "/session", {"name": name, "image": "python"})
    assert status == 201, body
    try:
        yield Subjects(users, {u.email: _folder_of(admin_api, u) for u in users.values()}, body["sessionId"])
    finally:
        status, gone = as_user.call("DELETE", f"/session/{name}?forced=true")
        assert status in (200, 404), gone
        wait_until(lambda: as_user.call("GET", f"/session/{name}")[0] == 404
                   or as_user.call("GET", f"/session/{name}")[1].get("status") in ("TERMINATED", "CANCELLED"),
                   "the sweep's session ended", 60)


def _concrete(path: str, subjects: Subjects, who: WebUser) -> str:
    def value(m: re.Match[str]) -> str:
        if m[1] == "ref":
            return subjects.session_id
        if m[1] == "name":
            return subjects.folders[who.email]
        raise AssertionError(f"routes.js has a parameter this test cannot fill: {path}")

    return re.sub(r":([A-Za-z_]+)", value, path)


def _expected(route: Route, role: str) -> tuple[str, str]:
    """(the mark of #shell-main, its value) once the route's page is shown to `role`."""
    if not route.may_open(role):
        return "page", "forbidden"
    # a redirect lands on its target; /login leads a logged-in user to their sessions
    return "ready", {"/login": "/sessions"}.get(route.path, route.redirect or route.path)


def _settle(page: Any, route: Route, role: str, table: list[Route]) -> list[str]:
    """Wait for the page to be shown and quiet; what is wrong with it (besides the Watch's)."""
    mark, value = _expected(route, role)
    try:
        page.wait_for_function(SETTLED_JS, arg=[mark, value, QUIET_MS], timeout=SETTLE_TIMEOUT_MS)
    except PlaywrightTimeout:
        marks = page.evaluate("() => ({...document.getElementById('shell-main')?.dataset})")
        return [f"not shown and quiet within {SETTLE_TIMEOUT_MS} ms: wanted data-{mark}={value}, "
                f"#shell-main has {marks} at {page.url}"]
    got = []
    boxes = page.locator(".problem:visible, #shell-banner[data-kind='error']:visible")
    if value == "forbidden":
        # the one problem expected: the UI's own refusal (no call to the manager was made)
        if page.locator("#shell-main .problem[data-status='403']").count() != 1 or boxes.count() != 1:
            got.append(f"not refused as expected: {boxes.all_inner_texts()}")
    else:
        got += [f"problem shown: {text}" for text in boxes.all_inner_texts()]
    hrefs = page.eval_on_selector_all("a[href^='/']", "links => links.map((a) => a.pathname)")
    got += [f"a link to {href}, which this user may not open" for href in sorted(set(hrefs))
            if any(r.matches(href) and not r.may_open(role) for r in table)]
    return got


@pytest.mark.parametrize("role", ROLES)
def test_every_page_loads_without_a_browser_error(browser: Any, web_endpoint: str, subjects: Subjects, admin_api: Api,
                                                   role: str) -> None:
    """Each route loaded afresh (a reload), then all of them again by following links inside the
    app (the page left behind must stop cleanly: its streams, timers and pending calls)."""
    who = subjects.users[role]
    page = open_page(browser, web_endpoint)
    page.context.add_init_script(INFLIGHT_JS)
    watch = Watch()
    watch.attach(page)
    failures: dict[str, list[str]] = {}
    table = routes()

    def visit(what: str, route: Route, go: Callable[[str], Any]) -> None:
        for attempt in (1, 2):
            go(_concrete(route.path, subjects, who))
            got = _settle(page, route, role, table)
            got = watch.take() + got
            # Others share this node: a manager restarting meanwhile is no fault of the page's
            # (the webserver says so: 502 manager-unreachable). Its visit is made again once the
            # manager answers.
            if attempt == 1 and any("manager-unreachable" in p for p in got):
                wait_until(lambda: _manager_answers(admin_api), "the manager to answer again", 90)
                watch.take()
                continue
            break
        if got:
            slug = route.path.strip("/").replace("/", "-").replace(":", "") or "root"
            shot(page, f"sweep-{role}-{what}-{slug}")
            failures[f"{what} {route.path}"] = got

    def follow(url: str) -> None:
        # a link followed by the router (no reload), as the menu's and the pages' links are
        page.evaluate("""(url) => {
          const a = Object.assign(document.createElement("a"), {href: url});
          document.body.append(a);
          a.click();
          a.remove();
        }""", url)

    try:
        login(page, who)
        if got := watch.take():
            failures["login"] = got
        admin_menu = page.locator("#shell-nav [data-menu='/admin']")
        assert admin_menu.count() == (1 if role in ADMIN_ROLES else 0)
        for route in table:
            # the page's own mark says when it is shown: no need to wait for the load event too
            visit("load", route, lambda url: page.goto(url, wait_until="commit"))
        for route in table:
            visit("follow", route, follow)
        # The watch is live: a folder that does not exist is a 404, a console error and a problem box.
        follow(f"/folders/{unique_name('no-such')}")
        page.wait_for_selector("#shell-main .problem[data-status='404']")
        page.wait_for_function(SETTLED_JS, arg=["page", "/folders/:name", QUIET_MS])
        caught = watch.take()
        assert any("answered 404" in p for p in caught) and any(p.startswith("console error") for p in caught), caught
    finally:
        page.context.close()
    assert not failures, "\n".join(f"{where}:\n  " + "\n  ".join(p) for where, p in failures.items())
