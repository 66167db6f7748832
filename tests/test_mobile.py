"""The search page on a phone (390x844, touch): filters in a drawer, and after a change the user sees results.

Playwright driving Debian's Chromium against the live test server, with and without JavaScript.
"""

import re
from collections.abc import Iterator
from typing import Any

import pytest
from browser_tabs import fresh_tab
from playwright.sync_api import expect

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def phone(browser: Any, live_server: str) -> Iterator[Any]:
    yield from fresh_tab(browser, live_server, viewport=PHONE, is_mobile=True, has_touch=True)


def count(page: Any) -> int:
    return int(page.locator("#results").get_attribute("data-count"))


def value_count(link: Any) -> int:
    return int(link.locator(".count").inner_text().replace(",", ""))


def in_view(page: Any, selector: str) -> bool:
    """Whether any part of the element is inside the viewport."""
    box = page.locator(selector).bounding_box()
    return box is not None and box["y"] < PHONE["height"] and box["y"] + box["height"] > 0


def results_at_top(page: Any) -> None:
    """The results heading is in the top third of the screen, and the footer is not on screen."""
    top = page.evaluate("document.getElementById('results-heading').getBoundingClientRect().top")
    assert -2 <= top < PHONE["height"] / 3, f"results heading at {top}px"
    assert not in_view(page, "footer.site-footer"), "the user is left at the footer"


def drawer_covers_the_screen(page: Any) -> None:
    drawer = page.locator("#filters")
    expect(drawer).to_be_visible()
    box = drawer.bounding_box()
    assert box["x"] == 0 and box["y"] == 0
    assert box["width"] == PHONE["width"] and box["height"] == PHONE["height"]


def test_filters_live_in_a_drawer_and_show_results_returns_to_them(phone: Any) -> None:
    page = phone
    page.goto("/datasets")
    everything = count(page)
    expect(page.locator("#filters")).to_be_hidden()  # not 6,000 px of filters below the results
    results_at_top(page)

    page.locator(".filters-button").tap()
    drawer_covers_the_screen(page)
    show = page.locator("#show-results")
    expect(show).to_be_visible()
    expect(show).to_have_text(f"Show {everything:,} results")

    ct = page.locator('#facet-modality a.facet-value[data-value="CT"]')
    ct_count = value_count(ct)
    ct.tap()
    expect(page).to_have_url(re.compile(r"modality=CT"))
    expect(show).to_have_text(f"Show {ct_count:,} results")
    drawer_covers_the_screen(page)  # still open: several changes in a row, each counted

    # a value further down: after the change it is where it was on screen (the panels above it changed)
    dim = page.locator('#facet-dim a.facet-value[data-value="3D"]')
    dim.scroll_into_view_if_needed()
    assert page.locator("#filters").evaluate("d => d.scrollTop") > 0
    where = dim.bounding_box()["y"]
    both = value_count(dim)
    dim.tap()
    expect(show).to_have_text(f"Show {both:,} results")
    expect(dim).to_have_class(re.compile(r"\bselected\b"))
    page.wait_for_function("() => new Promise(done => requestAnimationFrame(() => done(true)))")
    assert abs(dim.bounding_box()["y"] - where) < 4, "the tapped value stays under the finger"

    show.tap()
    expect(page.locator("#filters")).to_be_hidden()
    assert count(page) == both
    results_at_top(page)
    expect(page.locator(".filters-button")).to_have_text("Filters (2)")


def test_escape_and_the_close_button_close_the_drawer(phone: Any) -> None:
    page = phone
    page.goto("/datasets?modality=MR")
    page.locator(".filters-button").tap()
    expect(page.locator("#filters")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#filters")).to_be_hidden()
    page.locator(".filters-button").tap()
    page.locator(".drawer-close").tap()
    expect(page.locator("#filters")).to_be_hidden()
    results_at_top(page)
    assert "#" not in page.url


def test_a_chip_removed_far_down_the_page_leaves_the_results_in_view(phone: Any) -> None:
    """A change that shortens the list must not leave the user at the footer."""
    page = phone
    page.goto("/datasets?modality=CT&anatomy=lung")
    page.locator("a.chip", has_text="Lung").scroll_into_view_if_needed()
    page.locator("a.chip", has_text="Lung").tap()
    expect(page).to_have_url(re.compile(r"/datasets\?modality=CT$"))
    page.locator("#q").fill("pancreas")
    page.locator("#q").press("Enter")
    expect(page).to_have_url(re.compile(r"q=pancreas"))
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # the user scrolled to the end
    page.locator("a.chip", has_text="CT").tap()
    expect(page).to_have_url(re.compile(r"/datasets\?q=pancreas$"))
    results_at_top(page)


def test_the_drawer_works_without_javascript(browser: Any, live_server: str) -> None:
    context = browser.new_context(base_url=live_server, viewport=PHONE, java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto("/datasets")
        expect(page.locator("#filters")).to_be_hidden()
        page.locator(".filters-button").click()  # a link to #filters: CSS :target opens the drawer
        drawer_covers_the_screen(page)
        ct = page.locator('#facet-modality a.facet-value[data-value="CT"]')
        ct_count = value_count(ct)
        ct.click()  # a plain link: a new page, at its top
        page.wait_for_url(re.compile(r"modality=CT$"))
        expect(page.locator("#filters")).to_be_hidden()
        assert count(page) == ct_count
        results_at_top(page)
        page.locator(".filters-button").click()
        page.locator("#show-results").click()  # back to #results
        expect(page.locator("#filters")).to_be_hidden()
        results_at_top(page)
    finally:
        context.close()
