"""Bounded input on every route: bodies over their limit are refused (413) before they are read, unstorable
characters (NUL, lone surrogates) in paths, query strings, JSON and forms are a 422, and a length limit
checked inside a route is a 422 too; all in the error envelope, never a 500."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.core.config import get_settings

MiB = 2**20


def assert_envelope(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["ok"] is False and body["status"] == status and body["error"]
    assert body["errors"] and body["errors"][0]["loc"]
    return body


# --- body size ---------------------------------------------------------------------------------------------


class CountingReceive:
    """An ASGI receive handing out a body of `total` bytes in `chunk`-sized messages, counting what was
    taken: the app under test must stop taking long before the end."""

    def __init__(self, total: int, chunk: int = 64 * 2**10) -> None:
        self.total = total
        self.chunk = chunk
        self.taken = 0

    async def __call__(self) -> dict[str, Any]:
        if self.taken >= self.total:
            await asyncio.sleep(3600)  # a client that sent everything waits for the answer
        size = min(self.chunk, self.total - self.taken)
        self.taken += size
        return {"type": "http.request", "body": b"[" + b"1," * (size // 2 - 1), "more_body": True}


def call_app(headers: list[tuple[bytes, bytes]], receive: CountingReceive, path: str) -> tuple[int, bytes]:
    from app.main import create_app

    app = create_app()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    # in a thread of its own: a browser test earlier in the session may leave an event loop running here
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, asyncio.wait_for(app(scope, receive, send), timeout=30)).result()
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


def test_a_228_mib_json_list_with_content_length_is_refused_before_any_byte_is_read(
    configured_services: None,
) -> None:
    receive = CountingReceive(228 * MiB)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(228 * MiB).encode())]
    status, body = call_app(headers, receive, "/api/v1/bundles")
    assert status == 413
    assert b'"status":413' in body and b"larger than the JSON limit of 1048576 bytes" in body
    assert receive.taken == 0


def test_a_chunked_228_mib_json_body_is_refused_at_the_limit(client: TestClient) -> None:
    receive = CountingReceive(228 * MiB)
    status, body = call_app([(b"content-type", b"application/json")], receive, "/api/v1/bundles")
    assert status == 413
    assert b'"ok":false' in body
    # read up to the first chunk past the limit, not a byte further
    assert (
        get_settings().max_json_body_bytes < receive.taken <= get_settings().max_json_body_bytes + 64 * 2**10
    )


def test_a_chunked_form_body_is_refused_at_the_form_limit(configured_services: None) -> None:
    receive = CountingReceive(50 * MiB)
    headers = [(b"content-type", b"application/x-www-form-urlencoded"), (b"accept", b"application/json")]
    status, body = call_app(headers, receive, "/selection/add")
    assert status == 413
    assert b"form limit of 262144 bytes" in body
    assert receive.taken <= get_settings().max_form_body_bytes + 64 * 2**10


def test_a_real_server_answers_413_to_an_endless_chunked_body(live_server: str) -> None:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(live_server)
    chunk = b"1," * 32_768
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/bundles HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        sock.setblocking(False)
        answer = b""
        while sent < 228 * MiB and not answer:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
            try:
                answer = sock.recv(65536)
            except BlockingIOError:
                continue
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 8 * MiB


# --- unstorable characters ---------------------------------------------------------------------------------


def _routes_with_path_parameters() -> list[tuple[str, str]]:
    """Every (method, path) of the JSON and HTML routers that takes a path parameter."""
    from app.api.routes import MOUNTS

    found = []
    for mount in MOUNTS:
        for route in mount.router.routes:
            if isinstance(route, APIRoute) and "{" in route.path:
                found += [(method, mount.prefix + route.path) for method in sorted(route.methods - {"HEAD"})]
    return found


ROUTES = _routes_with_path_parameters()


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_nul_in_any_path_parameter_is_a_422(client: TestClient, method: str, path: str) -> None:
    url = re.sub(r"\{[^}]+\}", "abc%00def", path)
    body = assert_envelope(client.request(method, url, headers={"accept": "application/json"}), 422)
    assert "unstorable character" in body["error"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/datasets?q=liver%00",
        "/datasets?q=%00",
        "/api/v1/compare?d=a%00&d=b",
        "/api/v1/sources/estimate?d=x%00",
        "/api/v1/datasets.csv?q=%00",
    ],
)
def test_a_nul_in_a_query_string_value_is_a_422(client: TestClient, url: str) -> None:
    body = assert_envelope(client.get(url), 422)
    assert body["errors"][0]["loc"][0] == "query"


@pytest.mark.parametrize(
    ("path", "document"),
    [
        ("/api/v1/bundles", '{"datasets": ["brats\\u0000"], "name": "x"}'),
        ("/api/v1/bundles", '{"datasets": ["a"], "name": "\\ud800 lone"}'),
        ("/api/v1/selections", '{"name": "mine\\u0000"}'),
        ("/api/v1/datasets/search", '{"q": "liver\\u0000"}'),
        ("/api/v1/plans", '{"spec": {"name\\u0000": 1}}'),
    ],
)
def test_an_unstorable_character_in_a_json_string_is_a_422(
    client: TestClient, path: str, document: str
) -> None:
    response = client.post(path, content=document, headers={"content-type": "application/json"})
    body = assert_envelope(response, 422)
    assert "unstorable character" in body["error"]
    assert body["errors"][0]["loc"][0] == "body"


def test_an_escaped_backslash_before_u0000_is_text_but_an_escape_is_not(client: TestClient) -> None:
    # `\\u0000` in JSON is a backslash followed by "u0000": storable, so the route answers
    json_type = {"content-type": "application/json"}
    response = client.post("/api/v1/datasets/search", content='{"q": "a\\\\u0000"}', headers=json_type)
    assert response.status_code == 200, response.text
    response = client.post("/api/v1/datasets/search", content='{"q": "a\\\\\\u0000"}', headers=json_type)
    assert_envelope(response, 422)


def test_a_nul_in_a_form_field_is_a_422(client: TestClient) -> None:
    response = client.post(
        "/selection/add",
        content=b"slug=brats%00",
        headers={"content-type": "application/x-www-form-urlencoded", "accept": "application/json"},
    )
    assert_envelope(response, 422)


def test_a_browser_gets_the_error_page_for_a_nul(client: TestClient) -> None:
    response = client.get("/datasets/abc%00", headers={"accept": "text/html"})
    assert response.status_code == 422
    assert "text/html" in response.headers["content-type"]
    assert "unstorable character" in response.text


# --- length limits -----------------------------------------------------------------------------------------


def test_a_q_over_200_characters_in_a_query_string_is_a_422(client: TestClient) -> None:
    body = assert_envelope(client.get("/api/v1/datasets?q=" + "x" * 201), 422)
    assert body["errors"][0]["loc"] == ["q"]
    assert "200 characters" in body["error"]
    assert_envelope(client.get("/api/v1/facets?q=" + "x" * 500), 422)
    # the limit itself is allowed
    assert client.get("/api/v1/datasets?q=" + "x" * 200).status_code == 200


def test_the_html_search_answers_a_long_q_with_422(client: TestClient) -> None:
    response = client.get("/datasets?q=" + "x" * 300, headers={"accept": "text/html"})
    assert response.status_code == 422


def test_a_form_over_its_own_smaller_limit_is_a_413(client: TestClient) -> None:
    # the selection forms take at most 20,000 bytes, well under the global form limit
    response = client.post(
        "/selection/add",
        content=b"slug=" + b"a" * 30_000,
        headers={"content-type": "application/x-www-form-urlencoded", "accept": "application/json"},
    )
    body = assert_envelope(response, 413)
    assert "at most 20000 bytes" in body["error"]
