"""The selection, comparison and export controls in a real browser (Playwright driving Debian's Chromium).

Never runs `playwright install`: the browser is /usr/bin/chromium (`apt-get install chromium`).
"""

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect


def nav(page: Any) -> Any:
    return page.locator("#nav-selection")


def card(page: Any, index: int) -> Any:
    return page.locator("ol.result-list > li.with-actions").nth(index)


def slug_of(item: Any) -> str:
    return item.locator("article.result").get_attribute("data-slug")


def add(item: Any) -> None:
    item.locator(".selection-toggle button").click()
    expect(item.locator(".selection-toggle")).to_have_class(re.compile(r"\bchosen\b"))


def test_add_from_search_without_reload_and_keep_it_after_a_reload(page: Any) -> None:
    page.goto("/datasets?modality=CT")
    expect(nav(page)).to_have_text("Selection (0)")
    page.evaluate("window.__sameDocument = true")
    first, second = card(page, 0), card(page, 1)
    slugs = [slug_of(first), slug_of(second)]

    add(first)
    expect(nav(page)).to_have_text("Selection (1)")
    expect(first.locator(".selected-mark")).to_have_text("✓ In selection")
    add(second)
    expect(nav(page)).to_have_text("Selection (2)")
    assert page.evaluate("window.__sameDocument === true"), "adding is an htmx swap, not a page load"
    assert re.search(r"/datasets\?modality=CT$", page.url), "the address does not change"
    # focus stays on the button that was pressed (its id survives the swap)
    assert page.evaluate("document.activeElement.closest('.selection-toggle').dataset.slug") == slugs[1]

    page.reload()
    expect(nav(page)).to_have_text("Selection (2)")
    for index in (0, 1):
        expect(card(page, index).locator(".selection-toggle")).to_have_class(re.compile(r"\bchosen\b"))
    expect(card(page, 2).locator(".selection-toggle")).not_to_have_class(re.compile(r"\bchosen\b"))

    nav(page).click()
    expect(page).to_have_url(re.compile(r"/selection$"))
    listed = page.locator(".selection-item").evaluate_all("items => items.map(i => i.dataset.slug)")
    assert listed == slugs
    expect(page.locator(".total").first).to_contain_text("2")
    expect(page.locator(".next-step").first).to_contain_text("Before you can fetch it")


def test_remove_on_the_selection_page_updates_totals_and_count(page: Any) -> None:
    page.goto("/datasets?modality=MR")
    for index in range(3):
        add(card(page, index))
    expect(nav(page)).to_have_text("Selection (3)")
    page.goto("/selection")
    page.evaluate("window.__sameDocument = true")
    doomed = page.locator(".selection-item").first.get_attribute("data-slug")
    page.locator(".selection-item").first.locator("button", has_text="Remove").click()
    expect(page.locator(".selection-item")).to_have_count(2)
    expect(nav(page)).to_have_text("Selection (2)")
    expect(page.locator(f'.selection-item[data-slug="{doomed}"]')).to_have_count(0)
    expect(page.locator(".total-value").first).to_have_text("2")
    assert page.evaluate("window.__sameDocument === true")


def test_compare_two_ticked_results_highlights_differences(page: Any) -> None:
    page.goto("/datasets?modality=CT&sort=images")
    button = page.locator("[data-compare-button]")
    expect(button).to_be_disabled()
    names = [card(page, i).locator("h3 a").inner_text() for i in (0, 2)]
    card(page, 0).locator("input[data-compare]").check()
    expect(button).to_be_disabled()
    card(page, 2).locator("input[data-compare]").check()
    expect(button).to_have_text("Compare ticked (2)")
    expect(button).to_be_enabled()
    button.click()

    expect(page).to_have_url(re.compile(r"/compare\?d=.+&d=.+"))
    expect(page.locator("h1")).to_have_text("Compare 2 datasets")
    assert page.locator("thead .compare-name").all_inner_texts() == names
    differs = page.locator("tbody tr.differs")
    same = page.locator("tbody tr.same")
    assert differs.count() > 0 and same.count() > 0
    expect(differs.first.locator(".differs-mark")).to_have_text(re.compile("differs", re.I))
    background = "el => getComputedStyle(el.querySelector('td')).backgroundColor"
    assert differs.first.evaluate(background) != same.first.evaluate(background), (
        "differences are highlighted"
    )

    # the JSON twin says the same rows differ
    twin = page.locator('link[rel="alternate"]').get_attribute("href")
    body = page.request.get(twin).json()
    flagged = [f["name"] for f in body["fields"] if f["differs"]]
    assert differs.evaluate_all("rows => rows.map(r => r.dataset.field)") == flagged

    page.locator("#only-differences").check()
    expect(same.first).to_be_hidden()
    expect(differs.first).to_be_visible()


def test_dataset_page_adds_and_removes(page: Any) -> None:
    page.goto("/datasets?modality=CT")
    href = card(page, 0).locator("h3 a").get_attribute("href")
    page.goto(href)
    toggle = page.locator(".dataset-actions .selection-toggle")
    toggle.locator("button").click()
    expect(toggle).to_have_class(re.compile(r"\bchosen\b"))
    expect(nav(page)).to_have_text("Selection (1)")
    page.locator(".dataset-actions .selection-toggle button", has_text="Remove").click()
    expect(page.locator(".dataset-actions .selection-toggle")).not_to_have_class(re.compile(r"\bchosen\b"))
    expect(nav(page)).to_have_text("Selection (0)")


def test_search_export_menu_downloads_the_filtered_result(page: Any) -> None:
    page.goto("/datasets?modality=MR&anatomy=brain")
    count = int(page.locator("#search-region").get_attribute("data-count"))
    page.locator(".export-menu summary").click()
    link = page.locator(".export-list a", has_text="CSV")
    expect(link).to_be_visible()
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    lines = Path(download.path()).read_text().strip().splitlines()
    assert len(lines) == count + 1


def test_selection_works_without_javascript(browser: Any, live_server: str) -> None:
    context = browser.new_context(base_url=live_server, java_script_enabled=False)
    tab = context.new_page()
    try:
        tab.goto("/datasets?modality=CT")
        slug = slug_of(card(tab, 0))
        card(tab, 0).locator(".selection-toggle button").click()
        tab.wait_for_url(re.compile(r"/datasets\?modality=CT$"))
        expect(nav(tab)).to_have_text("Selection (1)")
        tab.goto("/selection")
        assert tab.locator(".selection-item").get_attribute("data-slug") == slug
        tab.fill("#selection-name", "My CT picks")
        tab.locator(".name-form button").click()
        expect(tab.locator("h1")).to_have_text("My CT picks")
        tab.locator(".selection-item button", has_text="Remove").click()
        tab.wait_for_url(re.compile(r"/selection$"))
        expect(tab.locator(".selection-item")).to_have_count(0)
        expect(nav(tab)).to_have_text("Selection (0)")
    finally:
        context.close()
