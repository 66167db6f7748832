"""Bad input gets a 422 (or 404) with the error envelope, never a 500."""

import pytest
from fastapi.testclient import TestClient


def assert_envelope(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False and body["status"] == status and body["error"]
    assert isinstance(body["errors"], list)
    return body


@pytest.mark.parametrize(
    ("query", "in_message"),
    [
        ("modality=bogus", "allowed values: CT, MR"),
        ("page_size=201", "page_size must be between 1 and 200"),
        ("page_size=0", "page_size"),
        ("page_size=abc", "page_size"),
        ("year__gte=abc", "year__gte must be an integer"),
        ("year__gte=2020&year__lte=2010", "larger than"),
        ("images__between=3", "unknown range"),
        ("sort=popularity", "allowed: relevance, images, year, name"),
        ("order=sideways", "allowed: asc, desc"),
        ("prefer_open=maybe", "true or false"),
        ("_next=%%%", "invalid _next cursor"),
        ("_next=eyJ4IjogMX0", "invalid _next cursor"),
        ("colour=red", "unknown parameter 'colour'"),
        ("year=twenty", "year must be a number"),
        ("_facet_size=-1", "_facet_size"),
    ],
)
def test_bad_query_parameters(client: TestClient, query: str, in_message: str) -> None:
    body = assert_envelope(client.get(f"/api/v1/datasets?{query}"), 422)
    assert in_message in body["error"]
    assert body["errors"][0]["loc"]


def test_bad_json_bodies(client: TestClient) -> None:
    assert_envelope(client.post("/api/v1/datasets/search", content=b"{not json"), 422)
    body = assert_envelope(client.post("/api/v1/datasets/search", json={"terms": {"colour": ["red"]}}), 422)
    assert "unknown facet" in body["error"]
    body = assert_envelope(client.post("/api/v1/datasets/search", json={"terms": {"modality": ["xyz"]}}), 422)
    assert "allowed values" in body["error"]
    assert_envelope(client.post("/api/v1/datasets/search", json={"ranges": {"year": {"gte": "soon"}}}), 422)
    assert_envelope(client.post("/api/v1/datasets/search", json={"q": "x" * 500}), 422)


def test_not_found_everywhere_uses_the_envelope(client: TestClient) -> None:
    assert_envelope(client.get("/api/v1/datasets/no-such-dataset"), 404)
    assert_envelope(client.get("/api/v1/no-such-endpoint"), 404)
    assert_envelope(client.get("/api/v1/vocabularies/colours"), 404)
    assert_envelope(client.delete("/api/v1/datasets"), 405)


def test_openapi_documents_every_route_with_an_operation_id(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    operations = [op for path in spec["paths"].values() for op in path.values()]
    assert all(op.get("operationId") for op in operations)
    assert "/api/v1/datasets" in spec["paths"]
    params = {p["name"] for p in spec["paths"]["/api/v1/datasets"]["get"]["parameters"]}
    assert {"modality", "anatomy", "year__gte", "page_size", "_next", "sort", "prefer_open"} <= params


def test_a_query_over_the_time_limit_is_a_503_with_the_envelope(client: TestClient, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Fault injection: the text search is made to exceed a 10 ms statement timeout inside PostgreSQL."""
    from sqlalchemy import text

    from app.search import service

    def slow_text_matches(session, q):  # type: ignore[no-untyped-def]
        session.execute(text("SET LOCAL statement_timeout = 10"))
        session.execute(text("SELECT pg_sleep(1)"))

    monkeypatch.setattr(service, "text_matches", slow_text_matches)
    # a word no earlier test searched: a kept answer would never reach the text search
    body = assert_envelope(client.get("/api/v1/datasets?q=livertimelimit"), 503)
    assert "time limit" in body["error"]
