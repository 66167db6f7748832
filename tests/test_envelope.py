"""One success envelope, checked like the error one: every JSON object a route answers with on success says
`"ok": true` in the OpenAPI document and in fact; lists stay bare arrays (documented exceptions)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

# JSON answers that are not envelopes, on purpose: the plan spec's JSON Schema (a schema document, which a
# validator must be able to read as it is)
NOT_ENVELOPES = {
    ("get", "/api/v1/plans/schema"),
}


def success_schemas(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, resolved schema) of every 2xx JSON answer in the OpenAPI document."""
    components = spec["components"]["schemas"]
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if not status.startswith("2") or schema is None:
                    continue
                if "$ref" in schema:
                    schema = components[schema["$ref"].rsplit("/", 1)[1]]
                found.append((method, path, schema))
    return found


def test_every_json_object_answered_on_success_documents_ok_true(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    checked = 0
    for method, path, schema in success_schemas(spec):
        if (method, path) in NOT_ENVELOPES:
            continue
        assert schema.get("type") == "object", (method, path, schema.get("type"))
        ok = schema["properties"].get("ok")
        assert ok is not None and ok.get("const") is True, (method, path)
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/datasets?modality=CT",
        "/api/v1/statistics",
        "/api/v1/vocabularies",
        "/api/v1/vocabularies/modality",
        "/api/v1/sources",
        "/api/v1/plans/presets",
    ],
)
def test_success_answers_say_ok_true(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["ok"] is True


def test_a_dataset_a_selection_and_a_bundle_say_ok_true(client: TestClient) -> None:
    slug, other = (
        row["slug"] for row in client.get("/api/v1/datasets", params={"page_size": 2}).json()["results"]
    )
    assert client.get(f"/api/v1/datasets/{slug}").json()["ok"] is True
    assert client.get("/api/v1/compare", params=[("d", slug), ("d", other)]).json()["ok"] is True
    created = client.post("/api/v1/selections", json={"dataset_slugs": [slug]})
    assert created.status_code == 201 and created.json()["ok"] is True
    error = client.get("/api/v1/datasets/no-such-dataset").json()
    assert error["ok"] is False  # the other half of the contract
