"""A new visitor builds a bundle in a real browser (Playwright driving Debian's Chromium), with a real Celery
worker fetching fixture sources from a local HTTP server.

Never runs `playwright install`: the browser is /usr/bin/chromium (`apt-get install chromium`).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bundle_fixtures import ServedSources, served_sources, sources_attached
from playwright.sync_api import expect

# one source that works, one malicious archive that must fail, one without an automated source (`manual`)
SLUGS = ("msd03-liver", "isic16", "lits")
# the working source answers slowly, so the job is visibly running when its page opens
DOWNLOAD_DELAY = 3.0
JOB_TIMEOUT_MS = 240_000
# left in the temporary folder after a run, for a person to look at
SCREENSHOT = Path(tempfile.gettempdir()) / "imagingx-bundle-job-done.png"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedSources]:
    """Fixture sources attached to the catalog for this module only (detached again before other modules)."""
    with (
        served_sources(tmp_path_factory.mktemp("sources"), delays={"msd03-liver": DOWNLOAD_DELAY}) as sources,
        sources_attached({slug: sources.descriptors[slug] for slug in SLUGS if slug in sources.descriptors}),
    ):
        yield sources


def add_to_selection(page: Any, slug: str) -> None:
    page.goto(f"/datasets/{slug}")
    toggle = page.locator(f'.selection-toggle[data-slug="{slug}"]')
    toggle.locator("button").click()
    expect(toggle).to_have_class(re.compile(r"\bchosen\b"))


def test_build_watch_and_download_a_bundle(
    page: Any, served: ServedSources, celery_worker_process: Any
) -> None:
    for slug in SLUGS:
        add_to_selection(page, slug)
    page.goto("/selection")
    form = page.locator("#build-bundle")
    form.get_by_label("Name").fill("Browser fixture")
    form.get_by_label("Validation share").fill("0.1")
    form.get_by_role("button", name="Build bundle").click()

    expect(page).to_have_url(re.compile(r"/bundles/[\w-]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("h1")).to_have_text("Browser fixture")
    page.evaluate("window.__sameDocument = true")
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if request.url.endswith("/status") else None)

    # progress moves while the page stays the same document (htmx swaps the status region)
    status = page.locator("#bundle-status")
    fractions: set[str] = set()
    deadline = time.monotonic() + JOB_TIMEOUT_MS / 1000
    while status.get_attribute("data-state") not in ("done", "failed", "cancelled"):
        fractions.add(page.locator("#bundle-status [data-fraction]").get_attribute("data-fraction") or "")
        assert time.monotonic() < deadline, "the job did not finish"
        page.wait_for_timeout(200)
    assert status.get_attribute("data-state") == "done", status.inner_text()
    assert page.evaluate("window.__sameDocument === true"), "progress is swapped in, not a page reload"
    assert len(polls) >= 2, "the status region polled while the job ran"
    assert any(float(f) < 1 for f in fractions if f), f"the page showed the job running: {fractions}"
    expect(page.locator("#bundle-status progress")).to_have_attribute("value", "100")
    expect(page.locator(".bundle-overview .bundle-state")).to_have_text("Done")
    expect(page.locator("#bundle-cancel")).to_have_count(0)

    # per-source outcome: fetched, failed with the reason, manual with the step that gets the data
    rows = {slug: page.locator(f'tr[data-source="{slug}"]') for slug in SLUGS}
    expect(rows["msd03-liver"]).to_have_attribute("data-state", "fetched")
    expect(rows["msd03-liver"]).to_contain_text("msd")
    expect(rows["isic16"]).to_have_attribute("data-state", "failed")
    expect(rows["isic16"].locator(".bundle-detail")).not_to_be_empty()
    expect(rows["lits"]).to_have_attribute("data-state", "manual")
    expect(rows["lits"]).to_contain_text("Manual download")
    expect(rows["lits"].locator(".bundle-detail")).to_contain_text("No automated source")
    expect(page.locator(".bundle-skipped")).to_contain_text("msd03-liver_abdomen_099")
    expect(page.locator("#bundle-cli-command")).to_have_value(f"imagingx bundle get {job_id}")

    # polling has stopped: the finished region carries no trigger
    assert status.get_attribute("hx-trigger") is None
    seen = len(polls)
    page.wait_for_timeout(2500)
    assert len(polls) == seen, "no more polling once the job is done"

    page.screenshot(path=str(SCREENSHOT), full_page=True)

    api = page.request.get(f"/api/v1/bundles/{job_id}").json()
    expect(page.locator('[data-result="archive_sha256"]')).to_have_text(api["result"]["archive_sha256"])
    with page.expect_download() as download_info:
        page.locator("[data-download]").click()
    download = download_info.value
    body = Path(download.path()).read_bytes()
    assert len(body) == api["result"]["archive_bytes"]
    assert hashlib.sha256(body).hexdigest() == api["result"]["archive_sha256"]

    # the header's Bundles link lists it for this browser
    page.locator("nav").get_by_role("link", name="Bundles").click()
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row).to_contain_text("Browser fixture")
    expect(row.locator(".bundle-state")).to_have_text("Done")
    expect(page.locator("#bundle-list")).not_to_have_attribute("hx-trigger", re.compile("every"))
