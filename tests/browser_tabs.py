"""Browser tabs for the Playwright tests (the `page` fixture of conftest.py, the phone of test_mobile.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def fresh_tab(browser: Any, live_server: str, **context_options: Any) -> Iterator[Any]:
    """A tab in a fresh browser profile (no cookies) on the live server, for a fixture to yield from; fails the
    test on any JavaScript error. `context_options`: Playwright's (viewport, is_mobile, ...)."""
    context = browser.new_context(base_url=live_server, **context_options)
    context.set_default_timeout(20_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors: {errors}"
