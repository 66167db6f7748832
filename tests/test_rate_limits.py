"""Per-client rate limits and quotas on creating plans, selections and bundle jobs, counted in the test Redis:
over a limit the answer is 429 in the error envelope with Retry-After, nothing is created, and other clients
are not affected."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import pytest
import redis
from bundle_fixtures import queue_for_this_process
from fastapi.testclient import TestClient

from app.core.config import get_settings
from app.core.security import Limit, client_key, parse_limits, retry_after

HTML = {"Accept": "text/html"}


@pytest.fixture
def limits(configured_services: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set IMAGINGX_RATE_LIMIT_<KIND> values for one test; this portal's counters are cleared before and after
    (only its own: another test run or portal may share the Redis)."""
    from app.core.security import counter_prefix

    url = get_settings().redis_url or ""
    prefix = counter_prefix(get_settings())

    def clear() -> None:
        with redis.Redis.from_url(url) as server:
            keys = list(server.scan_iter(f"{prefix}*"))
            if keys:
                server.delete(*keys)

    def set_limits(**values: str) -> None:
        for kind, value in values.items():
            monkeypatch.setenv(f"IMAGINGX_RATE_LIMIT_{kind.upper()}", value)
        get_settings.cache_clear()

    clear()
    with queue_for_this_process("imagingx-test-nobody-listens"):  # jobs made here never run
        yield set_limits
    clear()
    for kind in ("plans", "selections", "bundles"):
        monkeypatch.delenv(f"IMAGINGX_RATE_LIMIT_{kind.upper()}", raising=False)
    get_settings.cache_clear()


def client_at(address: str) -> TestClient:
    from app.main import create_app

    return TestClient(create_app(), client=(address, 50000))


def assert_limited(response: Any, window: int) -> dict[str, Any]:
    assert response.status_code == 429, response.text[:500]
    wait = int(response.headers["retry-after"])
    assert 1 <= wait <= window
    if response.headers["content-type"].startswith("text/html"):
        assert "too many" in response.text
        return {}
    body = response.json()
    assert body["ok"] is False and body["status"] == 429
    return body


def test_parse_limits() -> None:
    assert parse_limits("20/minute, 300/day") == [Limit(20, 60), Limit(300, 86_400)]
    assert parse_limits(" 5 / second ") == [Limit(5, 1)]
    assert parse_limits("") == []
    with pytest.raises(ValueError, match="N/minute"):
        parse_limits("5/week")


def test_clients_are_counted_by_ip_address() -> None:
    assert client_key({"client": ("192.0.2.1", 5000)}) == "192.0.2.1"
    assert client_key({"client": ("::1", 5000)}) == "::1"
    # no address to tell clients apart: an in-process test client, a Unix socket peer
    assert client_key({"client": ("testclient", 50000)}) is None
    assert client_key({"client": None}) is None


def test_selections_over_the_limit_get_429_and_other_clients_do_not(limits: Any) -> None:
    limits(selections="3/minute")
    with client_at("192.0.2.10") as first, client_at("192.0.2.11") as second:
        made = [first.post("/api/v1/selections", json={"dataset_slugs": ["lits"]}) for _ in range(3)]
        assert [r.status_code for r in made] == [201, 201, 201]
        body = assert_limited(first.post("/api/v1/selections", json={"dataset_slugs": ["lits"]}), 60)
        assert body["ok"] is False and body["status"] == 429 and "too many selections" in body["error"]
        assert second.post("/api/v1/selections", json={}).status_code == 201, "another address is not counted"
        # reading and changing what one has is not creating
        selection_id = made[0].json()["id"]
        assert first.get(f"/api/v1/selections/{selection_id}").status_code == 200
        added = first.post(f"/api/v1/selections/{selection_id}/datasets", json={"slug": "kits19"})
        assert added.status_code == 200


def test_the_selection_forms_count_only_a_visitor_without_a_selection(limits: Any) -> None:
    limits(selections="1/minute")
    with client_at("192.0.2.20") as browser, client_at("192.0.2.20") as new_browser:
        assert (
            browser.post("/selection/add", data={"slug": "lits"}, follow_redirects=False).status_code == 303
        )
        again = browser.post("/selection/add", data={"slug": "kits19"}, follow_redirects=False)
        assert again.status_code == 303, "adding to one's own selection creates nothing"
        refused = new_browser.post("/selection/add", data={"slug": "lits"}, headers=HTML)
        assert refused.status_code == 429 and "<html" in refused.text, "a browser gets the error page"
        assert "too many selections" in refused.text
        assert "imagingx_selection" not in new_browser.cookies


def test_bundle_jobs_over_the_limit_get_429_and_none_is_created(limits: Any) -> None:
    limits(bundles="2/minute")
    with client_at("192.0.2.30") as api:
        first = api.post("/api/v1/bundles", json={"datasets": ["lits"]})
        key = first.headers["x-owner-key"]
        owner = {"X-Owner-Key": key}
        assert api.post("/api/v1/bundles", json={"datasets": ["lits"]}, headers=owner).status_code == 202
        assert_limited(api.post("/api/v1/bundles", json={"datasets": ["lits"]}, headers=owner), 60)
        form = api.post("/bundles", data={"dataset": "lits"}, headers=HTML, follow_redirects=False)
        assert_limited(form, 60)
        jobs = api.get("/api/v1/bundles", headers=owner).json()["results"]
        assert len(jobs) == 2
        for job in jobs:
            assert api.post(f"/api/v1/bundles/{job['id']}/cancel", headers=owner).status_code == 200


def test_plans_over_the_limit_get_429(limits: Any) -> None:
    limits(plans="1/minute")
    spec = {"spec": {"target_modalities": ["CT"]}}
    with client_at("192.0.2.40") as api:
        assert api.post("/api/v1/plans", json=spec).status_code == 201
        assert_limited(api.post("/api/v1/plans", json=spec), 60)
        assert_limited(api.post("/plans", data={"source": "filters"}, headers=HTML), 60)


def test_a_daily_quota_counts_across_minutes_and_says_when_it_ends(limits: Any) -> None:
    limits(bundles="10/minute, 2/day")
    settings = get_settings()
    day_start = 20_000 * 86_400.0

    def count_at(seconds: float) -> int | None:
        # in a thread of its own: a browser test earlier in the session leaves an event loop on this one
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(
                anyio.run, retry_after, "bundles", "192.0.2.50", settings, day_start + seconds
            ).result()

    assert count_at(100) is None
    assert count_at(200) is None
    assert count_at(300) == 86_400 - 300, "the third of the day, each in its own minute"
    assert count_at(86_400) is None, "a new day"


def test_without_redis_creations_pass(limits: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Limits protect the portal; a Redis that is down must not stop it."""
    limits(selections="1/minute")
    with client_at("192.0.2.60") as api:
        assert api.post("/api/v1/selections", json={}).status_code == 201
        assert api.post("/api/v1/selections", json={}).status_code == 429
        monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
        get_settings.cache_clear()
        assert api.post("/api/v1/selections", json={}).status_code == 201
