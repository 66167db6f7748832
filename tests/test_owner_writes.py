"""Owner-only writes: security headers on every response, cross-site writes refused, and a bundle cancelled only
by whoever requested it (its owner key) while its id still reads it.

Jobs made here never reach a worker: their tasks go to a queue no worker consumes, and each is cancelled by its
owner at the end.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from bundle_fixtures import queue_for_this_process
from fastapi.testclient import TestClient

from app.bundles.api import OWNER_COOKIE, OWNER_HEADER

HTML = {"Accept": "text/html"}
MANUAL_ONLY = ["lits", "kits19"]  # no source descriptor in the seed catalog: nothing to fetch
CROSS_SITE = ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}, {"Origin": "null"})


@pytest.fixture(autouse=True)
def no_worker_runs_our_jobs() -> Iterator[None]:
    with queue_for_this_process("imagingx-test-nobody-listens"):
        yield


@pytest.fixture
def stranger(configured_services: None) -> Iterator[TestClient]:
    """A second browser: no cookies of the first."""
    from app.main import create_app

    with TestClient(create_app()) as other:
        yield other


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["ok"] is False and body["status"] == status
    return body


# -- headers ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path, accept",
    [
        ("/datasets", "text/html"),
        ("/api/v1/datasets?q=liver", "application/json"),
        ("/static/app.css", "*/*"),
        ("/api/v1/docs", "text/html"),
        ("/no-such-page", "text/html"),
        ("/api/v1/bundles/no-such-bundle", "application/json"),
    ],
)
def test_every_response_carries_the_security_headers(client: TestClient, path: str, accept: str) -> None:
    response = client.get(path, headers={"Accept": accept})
    assert response.status_code in (200, 404)
    policy = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"


def test_an_unexpected_error_carries_the_headers_too(configured_services: None) -> None:
    from app.main import create_app

    app = create_app()

    @app.get("/api/v1/fails-for-the-test")
    def fails() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/v1/fails-for-the-test")
    assert _error(response, 500)["error"] == "internal error: the failure was logged"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/(ld\+)?json\")[^>]*>", re.I)


def test_pages_use_no_inline_script_or_style_element(client: TestClient) -> None:
    """The policy allows scripts and styles from this origin only: a page with an inline one would break."""
    plan = client.post("/api/v1/plans", json={"spec": {"target_modalities": ["CT"]}}).json()
    client.post("/selection/add", data={"slug": "lits"}, headers=HTML, follow_redirects=False)
    pages = [
        "/datasets",
        "/datasets/lits",
        "/statistics",
        "/plans/new",
        f"/plans/{plan['id']}",
        "/selection",
        "/compare?d=lits&d=kits19",
        "/bundles",
    ]
    for path in pages:
        html = client.get(path, headers=HTML).text
        assert "<html" in html, path
        assert not INLINE_SCRIPT.search(html), f"{path}: {INLINE_SCRIPT.search(html)}"
        assert "<style" not in html, path
        loaded = re.findall(r'<script[^>]*\bsrc="([^"]+)"|<link rel="stylesheet" href="([^"]+)"', html)
        for src in ["".join(pair) for pair in loaded]:
            assert src.startswith("/") and not src.startswith("//"), f"{path} loads {src} from elsewhere"


# -- cross-site writes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cross", CROSS_SITE)
def test_cross_site_form_posts_are_refused_and_change_nothing(
    client: TestClient, cross: dict[str, str]
) -> None:
    client.post("/selection/add", data={"slug": "lits"}, headers=HTML, follow_redirects=False)
    created = client.post("/api/v1/bundles", json={"datasets": MANUAL_ONLY})
    job_id = created.json()["id"]
    posts = [
        ("/selection/clear", {}),
        ("/selection/name", {"name": "renamed"}),
        ("/plans", {"source": "filters", "target_modalities": "CT"}),
        ("/bundles", {"dataset": "lits"}),
        (f"/bundles/{job_id}/cancel", {}),
        (f"/api/v1/bundles/{job_id}/cancel", {}),
        ("/api/v1/selections", {}),
    ]
    for path, data in posts:
        body = _error(client.post(path, data=data, headers=cross, follow_redirects=False), 403)
        assert "this site's pages" in body["error"], path
    assert client.get("/api/v1/bundles/" + job_id).json()["state"] == "queued"
    selection = client.get("/api/v1/selections/" + client.cookies["imagingx_selection"]).json()
    assert (selection["name"], selection["dataset_slugs"]) == (None, ["lits"])
    html = client.post("/selection/clear", headers={**HTML, **cross}, follow_redirects=False)
    assert html.status_code == 403 and "<html" in html.text, "browsers get the error page"
    assert client.post(f"/api/v1/bundles/{job_id}/cancel").json()["state"] == "cancelled"


def test_posts_from_this_origin_or_a_trusted_one_pass_others_do_not(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.core.config import get_settings

    same = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    added = client.post("/selection/add", data={"slug": "lits"}, headers=same, follow_redirects=False)
    assert added.status_code == 303
    _error(client.post("/selection/clear", headers={"Origin": "http://testserver:8080"}), 403)
    _error(client.post("/selection/clear", headers={"Origin": "https://testserver"}), 403)
    assert client.post("/selection/clear", headers=same, follow_redirects=False).status_code == 303
    assert (
        client.get("/api/v1/selections/" + client.cookies["imagingx_selection"]).json()["dataset_slugs"] == []
    )

    monkeypatch.setenv("IMAGINGX_TRUSTED_ORIGINS", '["https://portal.example.org"]')
    get_settings.cache_clear()
    try:
        proxied = {"Origin": "https://portal.example.org"}
        assert client.post("/selection/add", data={"slug": "lits"}, headers=proxied).status_code == 200
        other = {"Origin": "https://portal.example.org.evil.example"}
        _error(client.post("/selection/add", data={"slug": "lits"}, headers=other), 403)
    finally:
        monkeypatch.delenv("IMAGINGX_TRUSTED_ORIGINS")
        get_settings.cache_clear()


# -- bundles: the owner key -------------------------------------------------------------------------------------
def test_only_the_owner_cancels_a_bundle_and_the_id_still_reads_it(
    configured_services: None, stranger: TestClient
) -> None:
    from app.main import create_app

    with TestClient(create_app()) as script:  # an API client: no cookie jar is relied on
        created = script.post("/api/v1/bundles", json={"datasets": MANUAL_ONLY})
        assert created.status_code == 202
        key = created.headers[OWNER_HEADER]
        assert len(key) >= 16 and created.cookies[OWNER_COOKIE] == key
    job_id = created.json()["id"]

    assert stranger.get(f"/api/v1/bundles/{job_id}").json()["state"] == "queued", "the id still reads it"
    body = _error(stranger.post(f"/api/v1/bundles/{job_id}/cancel"), 403)
    assert "owner key" in body["error"]
    wrong = {OWNER_HEADER: "x" * 32}
    _error(stranger.post(f"/api/v1/bundles/{job_id}/cancel", headers=wrong), 403)
    page = stranger.post(f"/bundles/{job_id}/cancel", headers=HTML, follow_redirects=False)
    assert page.status_code == 403
    assert stranger.get(f"/api/v1/bundles/{job_id}").json()["state"] == "queued"

    listed = stranger.get("/api/v1/bundles", headers={OWNER_HEADER: key}).json()
    assert listed["ok"] is True and listed["count"] == 1
    assert [job["id"] for job in listed["results"]] == [job_id], "the key lists its bundles"
    cancelled = stranger.post(f"/api/v1/bundles/{job_id}/cancel", headers={OWNER_HEADER: key})
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"


def test_the_build_form_browser_cancels_its_bundle_another_browser_cannot(
    client: TestClient, stranger: TestClient
) -> None:
    built = client.post("/bundles", data={"dataset": "lits"}, headers=HTML, follow_redirects=False)
    assert built.status_code == 303
    job_id = built.headers["location"].rsplit("/", 1)[1]
    # the job page offers Cancel to its owner only
    assert 'id="bundle-cancel"' in client.get(f"/bundles/{job_id}", headers=HTML).text
    assert 'id="bundle-cancel"' not in stranger.get(f"/bundles/{job_id}", headers=HTML).text
    assert stranger.post(f"/bundles/{job_id}/cancel", headers=HTML, follow_redirects=False).status_code == 403
    mine = client.post(f"/bundles/{job_id}/cancel", headers=HTML, follow_redirects=False)
    assert mine.status_code == 303
    assert client.get(f"/api/v1/bundles/{job_id}").json()["state"] == "cancelled"


# -- selections: the owner key and the read-only share link ----------------------------------------------------
def test_a_selection_shared_by_its_link_reads_and_exports_but_cannot_be_changed(
    client: TestClient, stranger: TestClient
) -> None:
    created = client.post("/api/v1/selections", json={"name": "Kidney", "dataset_slugs": ["lits", "kits19"]})
    owner = created.json()
    key, read_id = owner["id"], owner["read_id"]
    assert key != read_id and len(read_id) >= 32 and owner["owner"] is True
    assert owner["share_url"] == f"/api/v1/selections/{read_id}"
    assert all(f"/selections/{read_id}/export." in url for url in owner["exports"].values())
    assert all(key not in url for url in owner["exports"].values()), "exports never carry the owner key"

    shared = stranger.get(owner["share_url"]).json()
    assert shared["dataset_slugs"] == ["lits", "kits19"] and shared["name"] == "Kidney"
    assert shared["owner"] is False and shared["id"] == read_id
    assert key not in stranger.get(owner["share_url"]).text, "the share link never reveals the owner key"
    exported = stranger.get(owner["exports"]["json"])
    assert [row["slug"] for row in exported.json()["results"]] == ["lits", "kits19"]
    assert key not in exported.text and key[:8] not in exported.headers["content-disposition"]

    base = f"/api/v1/selections/{read_id}"
    writes = [
        stranger.put(base, json={"name": "mine now", "dataset_slugs": []}),
        stranger.post(f"{base}/datasets", json={"slug": "ct-org"}),
        stranger.delete(f"{base}/datasets/lits"),
        stranger.delete(base),
    ]
    for response in writes:
        assert "read-only link" in _error(response, 403)["error"]
    after = client.get(f"/api/v1/selections/{key}").json()
    assert (after["name"], after["dataset_slugs"]) == ("Kidney", ["lits", "kits19"])

    renamed = stranger.put(f"/api/v1/selections/{key}", json={"name": "Renal", "dataset_slugs": ["lits"]})
    assert renamed.status_code == 200, "the owner key is what allows a write"
    assert stranger.get(owner["share_url"]).json()["dataset_slugs"] == ["lits"]


def test_the_selection_page_shares_its_read_link_and_the_cookie_stays_the_owner_key(
    client: TestClient,
) -> None:
    client.post("/selection/add", data={"slug": "lits"}, headers=HTML, follow_redirects=False)
    key = client.cookies["imagingx_selection"]
    detail = client.get(f"/api/v1/selections/{key}").json()
    html = client.get("/selection", headers=HTML).text
    assert detail["share_page"] == f"/selections/{detail['read_id']}"
    assert f'<a href="{detail["share_page"]}" data-share-link>' in html
    exports = re.findall(r'href="(/api/v1/selections/[^"]+/export\.[a-z.]+)"', html)
    assert len(exports) == 5 and all(detail["read_id"] in url and key not in url for url in exports)


def test_the_shared_page_shows_the_selection_without_a_control_that_changes_it(
    client: TestClient, stranger: TestClient
) -> None:
    client.post("/selection/add", data={"slug": "lits"}, headers=HTML, follow_redirects=False)
    client.post("/selection/add", data={"slug": "kits19"}, headers=HTML, follow_redirects=False)
    client.post("/selection/name", data={"name": "Kidney CT"}, headers=HTML, follow_redirects=False)
    key = client.cookies["imagingx_selection"]
    detail = client.get(f"/api/v1/selections/{key}").json()

    page = stranger.get(detail["share_page"], headers=HTML)
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    html = page.text
    assert "<h1>Kidney CT</h1>" in html and "shared read-only" in html
    listed = re.findall(r'<li class="selection-item" data-slug="([^"]+)"', html)
    assert listed == ["lits", "kits19"]
    assert key not in html, "the owner key appears nowhere on the shared page"
    for control in ('action="/selection/remove"', 'action="/selection/clear"', 'action="/selection/name"'):
        assert control not in html
    assert 'id="build-bundle"' not in html
    assert f'href="{detail["share_url"]}/export.csv"' in html
    assert stranger.get("/selection", headers=HTML).text.count('class="selection-item"') == 0, "not adopted"
    # the owner key is not a share link, and an unknown id is a 404
    assert stranger.get(f"/selections/{key}", headers=HTML).status_code == 404
    assert stranger.get("/selections/" + "Z" * 32, headers=HTML).status_code == 404


def test_the_migration_gives_existing_selections_a_share_id(configured_services: None) -> None:
    """0007 on a database holding selections made before it: each gets a distinct read_id."""
    import secrets as random_ids

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from app.core.config import get_settings
    from app.core.db import MIGRATIONS_DIR, normalise_url

    server = make_url(normalise_url(get_settings().database_url or ""))
    name = f"imagingx_migration_{random_ids.token_hex(4)}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name)
    try:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False))
        command.upgrade(config, "0006")
        engine = create_engine(url)
        with engine.begin() as connection:
            for selection_id in ("a" * 32, "b" * 32):
                connection.execute(
                    text("INSERT INTO selection (id, dataset_slugs) VALUES (:id, '{}')"), {"id": selection_id}
                )
        command.upgrade(config, "0007")
        with engine.connect() as connection:
            rows = dict(connection.execute(text("SELECT id, read_id FROM selection")).all())
        engine.dispose()
        assert set(rows) == {"a" * 32, "b" * 32}
        assert len(set(rows.values())) == 2 and all(len(r) == 32 and r not in rows for r in rows.values())
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- the pages in a browser, under the policy -------------------------------------------------------------------
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


def test_pages_work_in_a_browser_under_the_policy(page: Any) -> None:
    """Chromium enforces the policy the server sends: scripts (htmx, charts, the page's own) still run, styles
    still apply, and nothing is blocked."""
    from playwright.sync_api import expect

    page.add_init_script(CSP_WATCH)
    plan = page.request.post("/api/v1/plans", data={"spec": {"target_modalities": ["CT"]}}).json()
    visited = []
    for path in ("/datasets?modality=CT", "/statistics", "/plans/new", f"/plans/{plan['id']}", "/bundles"):
        response = page.goto(path)
        assert response is not None and response.ok, path
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        assert page.evaluate("document.documentElement.className") == "js", f"{path}: the head script ran"
        visited.append((path, page.evaluate("window.__cspViolations")))
        if path == "/statistics":
            expect(page.locator("#chart-modality")).to_have_attribute("data-drawn", "true")
        if path == "/datasets?modality=CT":
            page.locator("ol.result-list > li.with-actions").first.locator(".selection-toggle button").click()
            expect(page.locator("#nav-selection")).to_have_text("Selection (1)")  # an htmx swap
    page.goto("/selection")
    expect(page.locator("[data-share-link]")).to_have_count(1)
    visited.append(("/selection", page.evaluate("window.__cspViolations")))
    assert all(not violations for _, violations in visited), visited
    display = page.evaluate("getComputedStyle(document.querySelector('.site-header')).display")
    assert display != "inline", "the stylesheet applies"
    # and the watch sees what the policy blocks: an injected inline script
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1';"
        " document.head.append(s); }"
    )
    page.wait_for_function("window.__cspViolations.length > 0")
    assert page.evaluate("window.__ran") is None
