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
    # textContent, not innerText: cards off screen are not rendered (content-visibility), their text is there
    modalities = page.locator("ol.result-list article.result").evaluate_all(
        "cards => cards.map(c => c.querySelector('dl.facts').textContent)"
    )
    assert all("CT" in text for text in modalities)


def test_a_click_replaces_only_the_results_and_panels(page: Any) -> None:
    """The search box, the filters' scroll box and the page stay the same elements; results are new."""
    page.goto("/datasets")
    page.evaluate(
        "window.__kept = [document.getElementById('filters'), document.getElementById('search-form'),"
        " document.getElementById('results')]"
    )
    replies: list[Any] = []
    page.on("response", lambda r: replies.append(r) if r.request.headers.get("hx-request") else None)
    toggle(page, "modality", "MR")
    same = page.evaluate(
        "[document.getElementById('filters') === window.__kept[0],"
        " document.getElementById('search-form') === window.__kept[1],"
        " document.getElementById('results') === window.__kept[2]]"
    )
    assert same == [True, True, False]
    assert [r.request.headers.get("hx-target") for r in replies] == ["results"]
    assert page.locator('#search-fields input[type=hidden][name="modality"]').get_attribute("value") == "MR"
    expect(page.locator("#show-results")).to_contain_text(f"{count(page):,}")
    assert page.title().startswith(f"{count(page):,} datasets")
    # no copy of the page is kept for Back (Back asks the server, as the history tests check)
    assert json.loads(page.evaluate("sessionStorage.getItem('htmx-history-cache') || '[]'")) == []


def test_show_all_unfolds_one_facet_and_it_stays_unfolded(page: Any) -> None:
    page.goto("/datasets?modality=CT")
    folded = page.locator("#facet-anatomy a.facet-value").count()
    mark_document(page)
    page.locator("#facet-anatomy a.facet-more").click()
    expect(page).to_have_url(re.compile(r"_more=anatomy"))
    expect(page.locator("#facet-anatomy a.facet-more")).to_have_text("Show fewer")
    unfolded = page.locator("#facet-anatomy a.facet-value").count()
    assert unfolded > folded
    assert len(result_slugs(page)) == 25 and count(page) > 25, "the results are untouched"
    assert page.locator("#facet-host a.facet-value").count() <= 8, "other facets stay folded"
    # a value far down the unfolded list: the result changes, the facet stays unfolded
    last = page.locator("#facet-anatomy a.facet-value").last
    value = last.get_attribute("data-value")
    toggle(page, "anatomy", value)
    assert f"anatomy={value}" in page.url and "_more=anatomy" in page.url
    assert page.locator("#facet-anatomy a.facet-value").count() >= folded
    expect(page.locator("#facet-anatomy a.facet-more")).to_have_text("Show fewer")
    # a new text search keeps it unfolded too (the form carries _more)
    page.fill("#q", "tumor")
    page.press("#q", "Enter")
    expect(page).to_have_url(re.compile(r"q=tumor.*_more=anatomy"))
    assert same_document(page)


def test_keyboard_focus_and_open_facets_survive_a_click(page: Any) -> None:
    page.goto("/datasets")
    page.locator("#facet-year summary").click()  # a facet closed by default, opened by the user
    expect(page.locator("#facet-year")).to_have_attribute("open", "")
    link = facet_link(page, "dim", "3D")
    link.focus()
    page.keyboard.press("Enter")
    expect(facet_link(page, "dim", "3D")).to_have_class(re.compile(r"\bselected\b"))
    assert page.evaluate("document.activeElement.dataset.value") == "3D"
    expect(page.locator("#facet-year")).to_have_attribute("open", "")


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
        "facts => facts.map(f => [...f.querySelectorAll('div')].find(d => d.querySelector('dt').textContent"
        " .toLowerCase() === 'images').querySelector('dd').textContent)"
    )
    numbers = [int(v.replace(",", "")) for v in images if v[0].isdigit()]
    assert numbers == sorted(numbers, reverse=True) and len(numbers) > 5

    page.fill("#year__gte", "2020")
    page.click("text=Apply ranges")
    expect(page).to_have_url(re.compile(r"year__gte=2020"))
    expect(page.locator(".chips")).to_contain_text("≥ 2020")
    years = page.locator("ol.result-list dl.facts").evaluate_all(
        "facts => facts.map(f => f.querySelector('dd').textContent)"
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
        # a folded facet's "show all" is a plain link; the unfolded facet's values keep it unfolded
        folded = tab.locator("#facet-anatomy a.facet-value").count()
        tab.locator("#facet-anatomy a.facet-more").click()
        tab.wait_for_url(re.compile(r"_more=anatomy"))
        assert tab.locator("#facet-anatomy a.facet-value").count() > folded
        tab.locator("a.chip", has_text="liver").click()
        tab.wait_for_url(re.compile(r"/datasets\?modality=CT"))
        assert "q=" not in tab.url and tab.locator("#q").input_value() == ""
        tab.goto("/statistics")
        expect(tab.locator("details.numbers").first).to_have_attribute("open", "")
        tab.locator("table.stat-table a", has_text=re.compile(r"^3D$")).first.click()
        tab.wait_for_url(re.compile(r"dim=3D$"))
    finally:
        context.close()
