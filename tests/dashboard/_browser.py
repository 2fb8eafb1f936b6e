"""Shared pieces of the browser tests: Debian's Chromium driven by Playwright, and a tab
that records every console error, page error, JavaScript dialog and request to another host.

Importing this module skips the importing test module when ``/usr/bin/chromium`` is
missing (``apt-get install chromium chromium-driver``): the tests never download a browser.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.dashboard.conftest import artifacts_dir

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]

if not CHROMIUM.exists():
    pytest.skip(
        "Debian's Chromium is not installed at /usr/bin/chromium "
        "(apt-get install chromium chromium-driver); the tests never download a browser",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Dialog, Page, Route, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Tab:
    """A page on the dashboard, with everything that went wrong in it."""

    page: Page
    base: str
    problems: list[str] = field(default_factory=list)

    def open(self, path: str) -> None:
        response = self.page.goto(self.base + path, wait_until="load")
        assert response is not None and response.status == 200, path

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(artifacts_dir() / f"{name}.png"), full_page=True)

    def text(self, selector: str) -> str:
        return " ".join(self.page.locator(selector).inner_text().split())


def open_tab(browser: Browser, port: int) -> Iterator[Tab]:
    """A fresh browser context on the dashboard at ``port``; fails the test on any problem."""
    base = f"http://127.0.0.1:{port}"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = Tab(context.new_page(), base)
    own = urlsplit(base).netloc

    def guard(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).netloc != own:
            tab.problems.append(f"request to another host: {url}")
            route.abort()
        else:
            route.continue_()

    context.route("**/*", guard)
    tab.page.on(
        "console",
        lambda m: (
            tab.problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )
    tab.page.on("pageerror", lambda e: tab.problems.append(f"page error: {e}"))

    def dialog(d: Dialog) -> None:
        tab.problems.append(f"dialog: {d.message}")
        d.dismiss()

    tab.page.on("dialog", dialog)
    yield tab
    context.close()
    assert not tab.problems


def api(tab: Tab, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(tab.base + path, timeout=30) as reply:
        data = json.load(reply)
    assert isinstance(data, dict)
    return data


def non_blank(tab: Tab, selector: str) -> int:
    """How many pixels of a canvas were drawn on."""
    count = tab.page.eval_on_selector(
        selector,
        """c => { const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                   let n = 0; for (let i = 3; i < d.length; i += 4) { if (d[i]) n++; } return n; }""",
    )
    assert isinstance(count, int)
    return count
