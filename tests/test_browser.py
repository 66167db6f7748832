"""The pages in a real browser: Playwright driving Debian's Chromium against the live test server.

Never runs `playwright install`: the browser is /usr/bin/chromium (`apt-get install chromium`).
"""

import json
import re
from typing import Any

from playwright.sync_api import expect


def count(page: Any) -> int:
    return int(page.locator("#search-region").get_attribute("data-count"))


def result_slugs(page: Any) -> list[str]:
    return page.locator("ol.result-list article.result").evaluate_all(
        "cards => cards.map(c => c.dataset.slug)"
    )


def facet_link(page: Any, facet: str, value: str) -> Any:
    return page.locator(f'#facet-{facet} a.facet-value[data-value="{value}"]')


def mark_document(page: Any) -> None:
    """A flag that survives htmx swaps but not a full page load."""
    page.evaluate("window.__sameDocument = true")


def same_document(page: Any) -> bool:
    return bool(page.evaluate("window.__sameDocument === true"))


def toggle(page: Any, facet: str, value: str) -> None:
    link = facet_link(page, facet, value)
    was_selected = "selected" in (link.get_attribute("class") or "")
    link.click()
    selected = facet_link(page, facet, value)
    if was_selected:
        expect(selected).not_to_have_class(re.compile(r"\bselected\b"))
    else:
        expect(selected).to_have_class(re.compile(r"\bselected\b"))


def test_facet_toggle_swaps_results_and_updates_the_address(page: Any) -> None:
    page.goto("/datasets")
    everything, first_page = count(page), result_slugs(page)
    ct_count = int(facet_link(page, "modality", "CT").locator(".count").inner_text().replace(",", ""))
    mark_document(page)

    toggle(page, "modality", "CT")

    assert re.search(r"/datasets\?modality=CT$", page.url)
    assert count(page) == ct_count < everything
    assert result_slugs(page) != first_page
    assert same_document(page), "the toggle is an htmx swap, not a page load"
    assert page.locator("#json-twin").get_attribute("href") == "/api/v1/datasets?modality=CT"
    assert "CT" in page.locator(".chips").inner_text()
    modalities = page.locator("ol.result-list article.result").evaluate_all(
        "cards => cards.map(c => c.querySelector('dl.facts').innerText)"
    )
    assert all("CT" in text for text in modalities)


def test_back_and_forward_restore_each_state(page: Any) -> None:
    page.goto("/datasets")
    everything = count(page)
    toggle(page, "modality", "CT")
    ct = count(page)
    toggle(page, "dim", "3D")
    ct_3d = count(page)
    assert "dim=3D" in page.url and ct_3d <= ct

    page.go_back()
    expect(page).to_have_url(re.compile(r"/datasets\?modality=CT$"))
    expect(page.locator("#search-region")).to_have_attribute("data-count", str(ct))
    expect(facet_link(page, "dim", "3D")).not_to_have_class(re.compile(r"\bselected\b"))

    page.go_back()
    expect(page).to_have_url(re.compile(r"/datasets$"))
    expect(page.locator("#search-region")).to_have_attribute("data-count", str(everything))

    page.go_forward()
    expect(page.locator("#search-region")).to_have_attribute("data-count", str(ct))


def test_back_after_leaving_the_page_shows_the_full_page(page: Any) -> None:
    """The URL answered both a fragment (htmx) and a page: the browser must not show the cached fragment."""
    page.goto("/datasets")
    toggle(page, "modality", "CT")
    page.locator("ol.result-list article.result h3 a").first.click()
    expect(page.locator("h1")).to_be_visible()
    page.go_back()
    expect(page).to_have_url(re.compile(r"modality=CT$"))
    expect(page.locator("header.site-header")).to_have_count(1)
    expect(page.locator("#search-region")).to_have_count(1)
    expect(facet_link(page, "modality", "CT")).to_have_class(re.compile(r"\bselected\b"))


def test_history_cache_miss_is_restored_from_the_server(page: Any) -> None:
    page.goto("/datasets")
    toggle(page, "modality", "CT")
    ct = count(page)
    toggle(page, "dim", "3D")
    page.evaluate("sessionStorage.setItem('htmx-history-cache', '[]')")  # as if the snapshot was evicted
    page.go_back()
    expect(page.locator("#search-region")).to_have_attribute("data-count", str(ct))
    expect(page.locator("header.site-header")).to_have_count(1)
    toggle(page, "dim", "2D")  # and the restored page still works
    assert "dim=2D" in page.url


def test_search_box_and_chip_removal(page: Any) -> None:
    page.goto("/datasets?modality=CT")
    ct = count(page)
    mark_document(page)
    page.fill("#q", "liver")
    page.press("#q", "Enter")
    expect(page).to_have_url(re.compile(r"q=liver"))
    expect(page.locator(".chips")).to_contain_text("liver")
    with_text = count(page)
    assert 0 < with_text < ct
    assert "modality=CT" in page.url, "a text search keeps the facet selections"
    assert same_document(page)
    assert page.url.endswith("/datasets?q=liver&modality=CT"), "the address is the canonical query"

    page.locator("a.chip", has_text="liver").click()
    expect(page).to_have_url(re.compile(r"/datasets\?modality=CT$"))
    expect(page.locator("#search-region")).to_have_attribute("data-count", str(ct))


def test_sort_and_ranges(page: Any) -> None:
    page.goto("/datasets?modality=MR")
    page.select_option("#sort", "images")
    expect(page).to_have_url(re.compile(r"sort=images"))
    images = page.locator("ol.result-list dl.facts").evaluate_all(
        "facts => facts.map(f => [...f.querySelectorAll('div')].find(d => d.querySelector('dt').innerText"
        " .toLowerCase() === 'images').querySelector('dd').innerText)"
    )
    numbers = [int(v.replace(",", "")) for v in images if v[0].isdigit()]
    assert numbers == sorted(numbers, reverse=True) and len(numbers) > 5

    page.fill("#year__gte", "2020")
    page.click("text=Apply ranges")
    expect(page).to_have_url(re.compile(r"year__gte=2020"))
    expect(page.locator(".chips")).to_contain_text("≥ 2020")
    years = page.locator("ol.result-list dl.facts").evaluate_all(
        "facts => facts.map(f => f.querySelector('dd').innerText)"
    )
    assert years and all(int(y) >= 2020 for y in years)


def test_bad_range_shows_the_error_and_keeps_the_results(page: Any) -> None:
    page.goto("/datasets?modality=CT")
    before, url = count(page), page.url
    page.fill("#year__gte", "2024")
    page.fill("#year__lte", "2010")
    page.click("text=Apply ranges")
    expect(page.locator("#flash")).to_contain_text("year__gte is larger than year__lte")
    assert page.url == url and count(page) == before


def test_next_page_and_back(page: Any) -> None:
    page.goto("/datasets?modality=CT")
    first = result_slugs(page)
    page.locator("a.next").click()
    expect(page).to_have_url(re.compile(r"_next="))
    expect(page.locator("#results-heading")).to_contain_text("Datasets 26")
    second = result_slugs(page)
    assert second and not set(first) & set(second)
    page.go_back()
    expect(page.locator("#results-heading")).not_to_contain_text("Datasets 26")
    assert result_slugs(page) == first


def test_dataset_page_from_a_result(page: Any) -> None:
    page.goto("/datasets?modality=CT&sort=images")
    card = page.locator("ol.result-list article.result").first
    name = card.locator("h3 a").inner_text()
    card.locator("h3 a").click()
    expect(page.locator("h1")).to_have_text(name)
    assert "/datasets/" in page.url
    json_ld = page.locator('script[type="application/ld+json"]').text_content()
    assert json.loads(json_ld)["@type"] == "Dataset"
    expect(page.locator(".raw-table").first).to_be_visible()
    twin = page.locator("a.json-link").first.get_attribute("href")
    assert twin == page.locator('link[rel="alternate"]').get_attribute("href")
    assert page.request.get(twin).json()["name"] == name


def test_statistics_charts_draw_and_link_into_search(page: Any) -> None:
    page.goto("/statistics")
    for name in ("taxonomy", "modality", "dim", "task", "anatomy", "access", "year"):
        chart = page.locator(f"#chart-{name}")
        expect(chart).to_have_attribute("data-drawn", "true")
        expect(chart.locator("svg")).to_have_count(1)
        assert chart.locator("svg path, svg rect").count() > 3, f"chart {name} is drawn"

    # click the top bar of the modality chart: it opens the matching search
    page.locator("#chart-modality").scroll_into_view_if_needed()
    point = page.evaluate(
        """() => {
            const chart = echarts.getInstanceByDom(document.getElementById('chart-modality'));
            const data = chart.getOption().series[0].data;
            const top = data[data.length - 1];
            const [x, y] = chart.convertToPixel({seriesIndex: 0}, [top.value / 2, top.name]);
            return {x, y, url: top.url};
        }"""
    )
    box = page.locator("#chart-modality").bounding_box()
    page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])
    expect(page).to_have_url(re.compile(re.escape(point["url"]) + "$"))
    assert count(page) > 0


def test_statistics_taxonomy_zooms_and_tables_link(page: Any) -> None:
    page.goto("/statistics")
    expect(page.locator("#chart-taxonomy")).to_have_attribute("data-drawn", "true")
    expect(page.locator("#taxonomy-current a")).to_have_attribute("href", "/datasets?")
    # clicking the largest tile zooms into it and offers its search
    box = page.locator("#chart-taxonomy").bounding_box()
    page.mouse.click(box["x"] + 60, box["y"] + 120)
    expect(page.locator("#taxonomy-current a")).to_have_attribute("href", re.compile(r"dim=.+&modality="))

    # the table fallback: collapsed once the charts are drawn, one click away, plain links
    table = page.locator(".chart-card", has=page.locator("#chart-modality")).locator("details.numbers")
    table.locator("summary").click()
    link = table.locator("a", has_text=re.compile(r"^CT$"))
    expect(link).to_be_visible()
    link.click()
    expect(page).to_have_url(re.compile(r"/datasets\?modality=CT$"))


def test_pages_work_without_javascript(browser: Any, live_server: str) -> None:
    context = browser.new_context(base_url=live_server, java_script_enabled=False)
    tab = context.new_page()
    try:
        tab.goto("/datasets")
        everything = count(tab)
        facet_link(tab, "modality", "CT").click()
        tab.wait_for_url(re.compile(r"modality=CT$"))
        assert count(tab) < everything
        tab.fill("#q", "liver")
        tab.locator("#search-form button[type=submit]").click()
        tab.wait_for_url(re.compile(r"q=liver"))
        assert "modality=CT" in tab.url
        tab.goto("/statistics")
        expect(tab.locator("details.numbers").first).to_have_attribute("open", "")
        tab.locator("table.stat-table a", has_text=re.compile(r"^3D$")).first.click()
        tab.wait_for_url(re.compile(r"dim=3D$"))
    finally:
        context.close()
