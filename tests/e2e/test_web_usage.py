"""The usage page in headless Chromium against the installed node: a user who ran a session sees
charts of their own use with non-zero data (drawn from the manager's /resource/stats/user/month),
with values on hover; an admin also sees a project's and everyone's; screenshots as artefacts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Api, unique_name, wait_until
from .webui import WebUser, admin_api, browser, keypair_api, login, make_user, open_page, shot, web_endpoint

__all__ = ["admin_api", "browser", "make_user", "web_endpoint"]  # fixtures, used by name


@pytest.fixture(scope="module")
def run(make_user: Any, admin_api: Api) -> tuple[WebUser, str]:
    """A user who ran (and ended) one session just now, and the session's name."""
    user: WebUser = make_user("user", prefix="usage")
    api = keypair_api(admin_api, user.email)
    name = unique_name("usage")
    status, body = api.call("POST", "/session", {"name": name, "image": "python"})
    assert status == 201, body
    if body["status"] != "RUNNING":  # a busy node may take longer than the create call waits

        def running() -> bool:
            st, info = api.call("GET", f"/session/{name}")
            assert st == 200 and info["status"] in ("PENDING", "SCHEDULED", "PREPARING", "PULLING", "RUNNING"), info
            return bool(info["status"] == "RUNNING")

        wait_until(running, "the session to run", 180)
    status, body = api.call("DELETE", f"/session/{name}")
    assert status in (200, 204), body

    def ended() -> bool:
        st, series = api.call("GET", "/resource/stats/user/month?interval=15m&days=1")
        assert st == 200, series
        return any(b["num_sessions"]["value"] > 0 for b in series)

    wait_until(ended, "the session to show in the user's usage", 60)
    return user, name


@pytest.fixture(scope="module")
def runner(run: tuple[WebUser, str]) -> WebUser:
    return run[0]


@pytest.fixture
def page(browser: Any, web_endpoint: str) -> Iterator[Any]:
    p = open_page(browser, web_endpoint)
    try:
        yield p
    finally:
        p.context.close()


def test_user_sees_charts_of_their_use(page: Any, runner: WebUser, run: tuple[WebUser, str]) -> None:
    from playwright.sync_api import expect

    login(page, runner)
    page.click("#shell-nav a[data-menu='/usage']")
    page.wait_for_selector("#shell-main[data-ready='/usage']")
    cpu = page.locator("#mine-cpu_allocated")
    expect(cpu).to_have_attribute("data-points", "96")  # the last 24 hours in 15-minute buckets
    assert int(cpu.get_attribute("data-nonzero") or 0) >= 1
    assert float(cpu.get_attribute("data-max") or 0) > 0
    assert int(page.locator("#mine-num_sessions").get_attribute("data-nonzero") or 0) >= 1
    assert int(page.locator("#mine-mem_allocated").get_attribute("data-nonzero") or 0) >= 1
    # axes with units: the memory chart's ticks are sizes
    assert re.search(r"\d+(\.\d)? (KiB|MiB|GiB)", page.locator("#mine-mem_allocated svg").text_content() or "")
    # hovering the plot at the busiest bucket shows its (non-zero) value
    box = cpu.locator("svg .chart-overlay").bounding_box()
    assert box is not None
    busiest = int(cpu.get_attribute("data-max-index") or 0)
    page.mouse.move(box["x"] + box["width"] * busiest / 95, box["y"] + box["height"] / 2)
    tip = cpu.locator(".chart-tip")
    expect(tip).to_be_visible()
    expect(tip).to_have_attribute("data-index", str(busiest))
    value = re.search(r"you: ([0-9.e-]+)", tip.inner_text())
    assert value and float(value.group(1)) > 0, tip.inner_text()
    # a plain user has no project section and gets no one else's figures
    assert page.locator("#usage-scope").count() == 0
    # the period's report lists the session (theirs only)
    expect(page.locator("#usage-report tbody tr")).to_have_count(1)
    expect(page.locator("#usage-report tbody tr")).to_contain_text(run[1])
    shot(page, "usage-user")

    page.select_option("#usage-range", "30d")
    page.wait_for_selector("#shell-main[data-ready='/usage']")
    expect(page.locator("#mine-cpu_allocated")).to_have_attribute("data-points", "30")
    assert int(page.locator("#mine-cpu_allocated").get_attribute("data-nonzero") or 0) >= 1
    shot(page, "usage-user-30d")


def test_admin_sees_project_and_everyone(page: Any, runner: WebUser, make_user: Any) -> None:
    from playwright.sync_api import expect

    admin: WebUser = make_user("superadmin", prefix="usage-admin")
    login(page, admin, "/usage")
    page.wait_for_selector("#shell-main[data-ready='/usage']")
    everyone = page.locator("#scope-num_sessions")
    expect(everyone).to_be_visible()
    assert int(everyone.get_attribute("data-nonzero") or 0) >= 1  # the runner's session counts
    default = page.locator("#usage-project option", has_text="default (default)")
    page.select_option("#usage-project", default.get_attribute("value"))
    expect(page.locator("#scope-cpu_allocated figcaption")).to_have_text("CPU cores")
    expect(page.locator("#scope-cpu_allocated .chart-legend")).to_contain_text("default (default)")
    assert int(page.locator("#scope-num_sessions").get_attribute("data-nonzero") or 0) >= 1
    shot(page, "usage-admin-project")
