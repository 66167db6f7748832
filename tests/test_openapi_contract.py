"""The API's contract: its docs page works offline, and Schemathesis finds nothing over the whole OpenAPI.

- `/api/v1/docs` loads Swagger UI from files vendored under static/ (never a CDN) and starts it from an
  external script, so it works on a machine without internet and under a CSP without inline scripts.
- Schemathesis generates requests for every operation of `/api/v1/openapi.json` (a bounded number per
  operation) against the live test server: no server error, every status code answered is documented, and a
  405 names the allowed methods.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

DOCS = "/api/v1/docs"
OPENAPI = "/api/v1/openapi.json"


class _Assets(HTMLParser):
    """The addresses a page loads (script src, link href) and the text of any inline script."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self._in_script = True
            if values.get("src"):
                self.urls.append(values["src"] or "")
            else:
                self.inline_scripts.append("")
        elif tag == "link" and values.get("href"):
            self.urls.append(values["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)


def test_api_docs_page_loads_only_vendored_same_origin_files(client: Any) -> None:
    response = client.get(DOCS)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assets = _Assets()
    assets.feed(response.text)

    assert not [text for text in assets.inline_scripts if text], "the page starts Swagger UI from a file"
    assert set(assets.urls) == {
        "/static/favicon.svg",
        "/static/vendor/swagger-ui.css",
        "/static/vendor/swagger-ui-bundle.js",
        "/static/api-docs.js",
    }
    for url in assets.urls:
        served = client.get(url)
        assert served.status_code == 200, url
        assert len(served.content) > 100, url
    assert b"SwaggerUIBundle" in client.get("/static/vendor/swagger-ui-bundle.js").content
    assert f'data-openapi-url="{OPENAPI}"' in response.text


def test_api_docs_render_every_operation_offline_under_a_strict_csp(page: Any, live_server: str) -> None:
    """In Chromium with every other origin unreachable, and with the site-wide policy (no inline script or
    style element) instead of the docs page's own, Swagger UI lists every operation of the OpenAPI."""
    from app.core.security import CONTENT_SECURITY_POLICY

    origin = urlsplit(live_server).netloc
    elsewhere: list[str] = []
    violations: list[str] = []

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if urlsplit(url).netloc != origin:
            elsewhere.append(url)
            request_route.abort()
        elif urlsplit(url).path == DOCS:
            response = request_route.fetch()
            headers = dict(response.headers, **{"content-security-policy": CONTENT_SECURITY_POLICY})
            request_route.fulfill(response=response, headers=headers)
        else:
            request_route.continue_()

    page.route("**/*", route)
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    operations = page.request.get(OPENAPI).json()["paths"]
    expected = sum(len(methods) for methods in operations.values())

    page.goto(DOCS)

    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Imaging-X Portal API")
    expect(page.locator(".opblock")).to_have_count(expected)
    assert page.locator(".opblock-summary-path", has_text="/api/v1/datasets/{slug}").count() == 1
    assert elsewhere == []
    assert violations == []


# -- the contract's pieces, checked directly ---------------------------------------------------------------------
def test_a_405_lists_every_method_of_the_path_in_allow(client: Any) -> None:
    # GET and POST /api/v1/bundles are two routes: Starlette alone would name only the first one's method
    response = client.request("OPTIONS", "/api/v1/bundles")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.json()["status"] == 405
    assert client.request("TRACE", "/api/v1/datasets/lits").headers["allow"] == "GET"


def test_a_plan_spec_refuses_booleans_as_numbers_and_numbers_as_booleans(client: Any) -> None:
    for spec in (
        {"selection": {"enable": True, "max_datasets": True}},
        {"min_valid_images_per_dataset": False},
        {"release_year_min": 2015.0},
        {"include_unlabeled": 0},
        {"allow_3d_as_2d_sources": "true"},
    ):
        response = client.post("/api/v1/plans", json={"spec": spec})
        assert response.status_code == 422, spec
        assert response.json()["errors"][0]["loc"][:2] == ["body", "spec"], spec
    created = client.post("/api/v1/plans", json={"spec": {"selection": {"enable": True, "max_datasets": 3}}})
    assert created.status_code == 201
    assert created.json()["spec"]["selection"]["max_datasets"] == 3


def test_the_planner_form_still_reads_its_numbers_from_text(client: Any) -> None:
    response = client.post(
        "/plans",
        data={
            "source": "filters",
            "goal": "CT",
            "min_valid_images_per_dataset": "50",
            "selection.max_datasets": "4",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    plan = client.get("/api/v1" + response.headers["location"]).json()
    assert plan["spec"]["min_valid_images_per_dataset"] == 50
    assert plan["spec"]["selection"]["max_datasets"] == 4


def test_the_openapi_documents_the_statuses_shared_code_answers(client: Any) -> None:
    paths = client.get(OPENAPI).json()["paths"]

    def statuses(method: str, path: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert {"404", "422", "503"} <= statuses("get", "/api/v1/datasets/{slug}")
    assert "404" not in statuses("get", "/api/v1/statistics")
    assert {"400", "403", "413", "422", "429"} <= statuses("post", "/api/v1/plans")
    assert {"400", "403", "404", "413"} <= statuses("put", "/api/v1/selections/{selection_id}")
    assert "429" not in statuses("put", "/api/v1/selections/{selection_id}")
    assert "Retry-After" in paths["/api/v1/plans"]["post"]["responses"]["429"]["headers"]


# -- Schemathesis over the whole OpenAPI ------------------------------------------------------------------------
# Operations left out of the fuzzing, each with its reason. Everything else is covered.
EXCLUDED_OPERATIONS = {
    # creating a bundle job queues downloads and fusion on the worker: minutes of work for each example
    "create_bundle",
}
EXCLUDED_CHECKS = {
    # "a request the schema allows must succeed": vocabulary values accept synonyms in any case and slugs are
    # looked up in the catalog, which a JSON schema cannot state, so an unknown one is rightly a 422
    "positive_data_acceptance",
}


@pytest.fixture
def no_creation_limits(live_server: str) -> Iterator[None]:
    """No creation limits meanwhile: otherwise most plan and selection posts would get a 429 and test nothing,
    and the run would use up the live server's daily quota for the tests after it."""
    from app.core.config import get_settings

    with pytest.MonkeyPatch.context() as patch:
        for kind in ("PLANS", "SELECTIONS", "BUNDLES"):
            patch.setenv(f"IMAGINGX_RATE_LIMIT_{kind}", "")
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


def test_schemathesis_finds_no_failure_over_the_whole_openapi(
    live_server: str, no_creation_limits: None, tmp_path: Path
) -> None:
    """Every phase (examples, coverage, fuzzing, stateful), at most 50 generated cases per operation and a
    fixed seed: no server error, no undocumented status, Allow on every 405, responses match their schemas."""
    report = tmp_path / "schemathesis.json"
    argv = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{live_server}{OPENAPI}",
        "--checks=all",
        f"--exclude-checks={','.join(sorted(EXCLUDED_CHECKS))}",
        "--max-examples=50",
        "--seed=12",
        "--workers=2",
        "--report=json",
        f"--report-json-path={report}",
        *(f"--exclude-operation-id={operation}" for operation in sorted(EXCLUDED_OPERATIONS)),
    ]
    # cwd: Schemathesis keeps a cache of past failures there; each run starts from none
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    print(result.stdout[result.stdout.find("SUMMARY") :])
    summary = json.loads(report.read_text())
    print(json.dumps({key: summary[key] for key in ("schemathesis_version", "operations", "test_cases")}))

    assert summary["failures"] == [] and summary["errors"] == [], result.stdout[-8000:]
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    operations = summary["operations"]
    assert operations["tested"] == operations["selected"] == operations["total"] - len(EXCLUDED_OPERATIONS)
    assert operations["total"] >= 29
    assert all(phase["status"] == "success" for phase in summary["phases"].values()), summary["phases"]
