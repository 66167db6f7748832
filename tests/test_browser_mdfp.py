"""The planner pages in a real browser: Playwright driving Debian's Chromium against the live test server.

Never runs `playwright install`: the browser is /usr/bin/chromium (`apt-get install chromium`).
"""

import json
import re
from typing import Any

from playwright.sync_api import expect


def test_survey_preset_plan_draws_its_charts_and_the_curated_table(page: Any) -> None:
    page.goto("/plans/new")
    expect(page.locator("#preset")).to_have_value("survey-2d-foundation")
    page.get_by_role("button", name="Create plan from the quick filters").click()
    expect(page).to_have_url(re.compile(r"/plans/[A-Za-z0-9_-]{22}$"))

    charts = page.locator(".plan-chart .chart")
    count = charts.count()
    assert count >= 10  # three phases of charts plus the final list's
    expect(page.locator(".plan-chart .chart[data-drawn]")).to_have_count(count)
    # every chart drew real marks: bars and pie slices are SVG paths with a non-empty bounding box
    marks = charts.evaluate_all(
        """els => els.map(el => {
             const svg = el.querySelector('svg');
             if (!svg) return 0;
             const box = svg.getBoundingClientRect();
             return box.width > 0 && box.height > 0 ? svg.querySelectorAll('path').length : 0;
           })"""
    )
    assert all(n > 3 for n in marks), marks

    summary = page.locator("#curated-summary")
    expect(summary.locator("thead")).to_contain_text("n_datasets")
    for column in ("sum_image", "n_orgs", "labeled"):
        expect(summary.locator("thead")).to_contain_text(column)
    modalities = summary.locator("tbody tr th").all_inner_texts()
    assert modalities == ["CT", "MR", "Fundus photography", "Total (each dataset once)"]
    expect(summary.locator('tr[data-modality="CT"] td[data-col="n_orgs"]')).to_contain_text("unknown for")
    expect(page.locator("#survey")).to_contain_text("1,173,965")
    expect(page.locator('link[rel="alternate"][type="application/json"]')).to_have_count(1)
    expect(page.locator("[data-catalog-version]")).to_have_text(re.compile(r"^\d+$"))


def test_quick_filters_rewrite_the_json_editor_and_the_json_is_what_is_planned(page: Any) -> None:
    page.goto("/plans/new")
    page.get_by_label("PET", exact=True).check()
    page.get_by_label("Minimum images per dataset").fill("250")
    spec = json.loads(page.locator("#field-spec_json").input_value())
    assert spec["target_modalities"] == ["CT", "MR", "PT", "FUNDUS"]  # vocabulary order
    assert spec["min_valid_images_per_dataset"] == 250

    page.get_by_role("button", name="Create plan from the JSON").click()
    expect(page).to_have_url(re.compile(r"/plans/[A-Za-z0-9_-]{22}$"))
    expect(page.locator('#curated-summary tr[data-modality="PT"]')).to_have_count(1)
    expect(page.locator(".spec-json")).to_contain_text('"min_valid_images_per_dataset": 250')


def test_choosing_a_preset_loads_it(page: Any) -> None:
    page.goto("/plans/new")
    page.locator("#preset").select_option("retina-grading")
    expect(page).to_have_url(re.compile(r"preset=retina-grading"))
    expect(page.get_by_label("OCT", exact=True)).to_be_checked()
    expect(page.get_by_label("CT", exact=True)).not_to_be_checked()


def test_invalid_json_shows_the_error_by_the_editor(page: Any) -> None:
    page.goto("/plans/new")
    page.locator("#field-spec_json").fill('{"target_modalities": ["CT", "Xray2"]}')
    page.get_by_role("button", name="Create plan from the JSON").click()
    expect(page.locator(".json-errors")).to_contain_text("spec.target_modalities[1]")
    expect(page.locator("#field-spec_json")).to_have_attribute("aria-invalid", "true")
