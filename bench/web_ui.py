"""Web UI benchmark (issue 12), one run on the installed node, stops by itself.

In headless Chromium (Debian's, through Playwright), for a fresh user, in the same run as the
same steps through the CLI (``backend.ai`` with that user's keypair: the raw baseline):

  (1) login -> session list painted: from the click on "Log in" to the list's rows in the DOM
      (``#session-list[data-loaded]``, the driver's clock) and inside the page (performance marks
      from the form's submit event to the frame drawn with the rows; the target is checked on this
      one), with the /server/login request's own share (the manager checks the password), against
      ``backend.ai ps``;
  (2) login -> terminal prompt of a RUNNING session: from the click on "Log in" (with the session
      page as the page to return to) to the shell's prompt in the in-browser terminal, against
      ``backend.ai run -t NAME -c 'print(1)'`` on that session (a first execute);
  (3) start -> terminal prompt: from the click on "Start" to the prompt of the new session's
      terminal, against ``backend.ai session create`` + a first execute.

Each step runs ``--repeat`` times (fresh browser contexts: no cache, no cookies) and the median
and best are printed. Target: (1) under 1 s.

Usage: /opt/bai/venv/bin/python bench/web_ui.py [--repeat 5] [--json]
(root: reads /etc/backend.ai/client.env; uses the installed webserver when BAI_WEB_ENDPOINT answers,
else starts one on a free port, as tests/e2e/webui.py does.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.conftest import VENV_BIN, Api, _read_env_file, unique_name  # noqa: E402
from tests.e2e.webui import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    WebUser,
    create_user,
    open_page,
    purge_user,
    running_webserver,
)

PROMPT = "#session-terminal .xterm-accessibility-tree"


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def summary(values: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(values), 3), "best_s": round(min(values), 3), "n": len(values)}


class Cli:
    """The CLI as the bench user (their own keypair, as the browser acts for them)."""

    def __init__(self, admin: Api, user: WebUser) -> None:
        status, body = admin.call("POST", "/admin/gql", {
            "query": "query($e: String) { keypairs(email: $e) { access_key secret_key } }", "variables": {"e": user.email}})
        assert status == 200 and body["data"]["keypairs"], body
        pair = body["data"]["keypairs"][0]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
        self.env.update(_read_env_file())
        self.env.update(BACKEND_ACCESS_KEY=pair["access_key"], BACKEND_SECRET_KEY=pair["secret_key"])

    def __call__(self, *args: str) -> None:
        subprocess.run([str(VENV_BIN / "backend.ai"), *args], env=self.env, check=True, capture_output=True, timeout=120)

    def create_and_execute(self, name: str) -> None:
        self("session", "create", "-t", name, "python")
        self("run", "-t", name, "-c", "print(1)")


def browser_login(page: Any, user: WebUser, next_path: str, ready: str) -> float:
    """Seconds from the click on "Log in" to `ready` (a selector) on the page after it."""
    page.goto(f"/login?next={next_path}")
    page.wait_for_selector("#shell-main[data-ready='/login']")
    page.fill("#login-email", user.email)
    page.fill("#login-password", user.password)
    start = time.perf_counter()
    page.click("#login-submit")
    page.wait_for_selector(ready)
    return time.perf_counter() - start


def prompt_ready(page: Any) -> None:
    page.wait_for_function(f"() => (document.querySelector('{PROMPT}')?.textContent || '').includes('$')")


def run(repeat: int, steps: set[str]) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    admin = Api(_read_env_file())
    user = create_user(admin, "user", prefix="webbench")
    cli = Cli(admin, user)
    out: dict[str, Any] = {}
    try:
        with running_webserver() as base, sync_playwright() as p:
            out["webserver"] = base
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = open_page(browser, base)  # one warm-up: the webserver's static cache, chromium's start
            browser_login(page, user, "/sessions", "#session-list[data-loaded]")
            page.context.close()

            # (1) the session list: measured outside (the driver's clock: click to selector) and
            # inside the page (performance marks: submit event to the frame showing the rows)
            ui, inside, login_rq, raw = [], [], [], []
            for _ in range(repeat):
                page = open_page(browser, base)
                ui.append(browser_login(page, user, "/sessions", "#session-list[data-loaded]"))
                page.wait_for_function("() => performance.getEntriesByName('bai:session-list-painted').length > 0")
                inside.append(page.evaluate("""() => (performance.getEntriesByName('bai:session-list-painted')[0].startTime
                    - performance.getEntriesByName('bai:login-submit')[0].startTime) / 1000"""))
                login_rq.append(page.evaluate("""() => performance.getEntriesByType('resource')
                    .find((e) => e.name.endsWith('/server/login')).duration / 1000"""))
                page.context.close()
                raw.append(timed(lambda: cli("ps")))
            out["login_to_session_list"] = {"browser": summary(ui), "in_page": summary(inside),
                                            "of_which_login_request": summary(login_rq), "cli_ps": summary(raw)}

            if "terminal" not in steps:
                browser.close()
                return out
            # (2) a RUNNING session's terminal
            name = unique_name("webbench")
            cli("session", "create", "-t", name, "python")
            status, info = admin.call("POST", "/admin/gql", {"query": """query { compute_session_list(limit: 100,
                offset: 0, status: "RUNNING") { items { session_id name user_email } } }"""})
            sid = next(s["session_id"] for s in info["data"]["compute_session_list"]["items"]
                       if s["name"] == name and s["user_email"] == user.email)
            ui, raw = [], []
            for _ in range(repeat):
                page = open_page(browser, base)
                t = browser_login(page, user, f"/sessions/{sid}%23terminal", "#terminal-state[data-state='open']")
                start = time.perf_counter()
                prompt_ready(page)
                ui.append(t + time.perf_counter() - start)
                page.context.close()  # closes the socket: the shell ends (at most 4 per session)
                raw.append(timed(lambda: cli("run", "-t", name, "-c", "print(1)")))
            cli("session", "destroy", name)
            out["login_to_running_terminal"] = {"browser": summary(ui), "cli_first_execute": summary(raw)}

            # (3) a new session's terminal
            ui, raw = [], []
            page = open_page(browser, base)
            browser_login(page, user, "/sessions/new", "#shell-main[data-ready='/sessions/new']")
            for _ in range(repeat):
                page.goto("/sessions/new")
                page.wait_for_selector("#shell-main[data-ready='/sessions/new']")
                page.select_option("#new-image", "python")
                start = time.perf_counter()
                page.click("#new-submit")
                page.wait_for_selector("#session-status[data-status='RUNNING']", timeout=120_000)
                page.click("#open-terminal")
                prompt_ready(page)
                ui.append(time.perf_counter() - start)
                page.click("#destroy-session")
                page.click("#destroy-session")
                page.wait_for_selector("#shell-main[data-ready='/sessions']")
                cname = unique_name("webbench")
                raw.append(timed(lambda name=cname: cli.create_and_execute(name)))  # type: ignore[misc]
                cli("session", "destroy", cname)
            page.context.close()
            out["start_to_terminal"] = {"browser": summary(ui), "cli_create_and_execute": summary(raw)}
            browser.close()
    finally:
        purge_user(admin, user)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--list-only", action="store_true", help="only step (1): needs no free CPU on the node")
    args = parser.parse_args()
    result = run(args.repeat, {"list"} if args.list_only else {"list", "terminal"})
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"web UI bench against {result.pop('webserver')} (median / best of {args.repeat}, seconds)")
    for step, pair in result.items():
        cells = "   ".join(f"{who}: {v['median_s']:.3f} / {v['best_s']:.3f}" for who, v in pair.items())
        print(f"  {step:28s} {cells}")
    painted = result["login_to_session_list"]["in_page"]["median_s"]
    print(f"target: session list painted < 1 s after login: {'met' if painted < 1 else 'MISSED'} ({painted:.3f} s)")


if __name__ == "__main__":
    main()
