"""Graceful overload: a web process works on a bounded number of requests; beyond its turns and its queue
deadline a request gets 503 + Retry-After quickly (the error envelope, or the error page with no database
work), never a stall; an exhausted connection pool is a 503 too, not a 500. The caches that keep pages cheap
(catalog version, searches, details, anonymous pages) never serve a stale or another visitor's answer."""

from __future__ import annotations

import asyncio
import gc
import json
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.core.admission import Turns
from app.core.config import get_settings


def run_in_thread(coroutine_factory: Any) -> Any:
    """asyncio.run in a thread of its own (a browser test may leave a loop running in the main thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coroutine_factory())).result()


def unique_word() -> str:
    """A query no earlier test asked (a kept answer would not reach the patched search)."""
    return "zz" + secrets.token_hex(4)


# --- Turns: the bounded queue itself --------------------------------------------------------------------------


def test_turns_run_at_most_slots_at_once_and_hand_over_in_arrival_order() -> None:
    async def scenario() -> tuple[int, list[int]]:
        turns = Turns(slots=2, wait_seconds=5, max_waiting=10)
        running = peak = 0
        order: list[int] = []

        async def request(number: int) -> None:
            nonlocal running, peak
            assert await turns.acquire()
            running += 1
            peak = max(peak, running)
            order.append(number)
            await asyncio.sleep(0.01)
            running -= 1
            turns.release()

        tasks = []
        for number in range(8):
            tasks.append(asyncio.create_task(request(number)))
            await asyncio.sleep(0)  # arrive one after the other
        await asyncio.gather(*tasks)
        assert turns.in_flight == 0 and turns.waiting == 0
        return peak, order

    peak, order = run_in_thread(scenario)
    assert peak == 2
    assert order == list(range(8))


def test_a_request_waiting_past_the_deadline_is_refused_and_frees_nothing_it_did_not_hold() -> None:
    async def scenario() -> tuple[bool, float, int]:
        turns = Turns(slots=1, wait_seconds=0.2, max_waiting=10)
        assert await turns.acquire()
        started = time.monotonic()
        admitted = await turns.acquire()
        waited = time.monotonic() - started
        turns.release()  # the holder finishes
        return admitted, waited, turns.in_flight

    admitted, waited, in_flight = run_in_thread(scenario)
    assert admitted is False
    assert 0.15 < waited < 1.0
    assert in_flight == 0


def test_a_full_queue_refuses_at_once_and_a_client_that_leaves_while_waiting_loses_its_place() -> None:
    async def scenario() -> tuple[bool, float, bool]:
        turns = Turns(slots=1, wait_seconds=5, max_waiting=1)
        assert await turns.acquire()
        waiter = asyncio.create_task(turns.acquire())
        await asyncio.sleep(0.01)
        started = time.monotonic()
        refused_at_once = await turns.acquire()
        quick = time.monotonic() - started
        waiter.cancel()  # the waiting client disconnects
        with pytest.raises(asyncio.CancelledError):
            await waiter
        turns.release()
        # the turn was not handed to the departed waiter: a newcomer gets it at once
        newcomer = await asyncio.wait_for(turns.acquire(), 0.1)
        return refused_at_once, quick, newcomer

    refused_at_once, quick, newcomer = run_in_thread(scenario)
    assert refused_at_once is False and quick < 0.05
    assert newcomer is True


# --- the middleware in the app -----------------------------------------------------------------------------


@pytest.fixture
def one_turn_app(
    configured_services: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, threading.Event]]:
    """The app with one turn and a 0.3 s queue deadline, whose search blocks until the test releases it."""
    from app.search import service

    monkeypatch.setenv("IMAGINGX_WEB_CONCURRENCY", "1")
    monkeypatch.setenv("IMAGINGX_WEB_QUEUE_SECONDS", "0.3")
    get_settings.cache_clear()
    release = threading.Event()
    real_search = service.search_datasets

    def slow_search(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)
        return real_search(*args, **kwargs)

    monkeypatch.setattr(service, "search_datasets", slow_search)
    from app.main import create_app

    try:
        yield create_app(), release
    finally:
        release.set()
        monkeypatch.undo()
        get_settings.cache_clear()


def test_beyond_capacity_requests_get_a_fast_503_with_retry_after_not_a_stall(
    one_turn_app: tuple[Any, threading.Event],
) -> None:
    app, release = one_turn_app
    with TestClient(app) as client, ThreadPoolExecutor(4) as pool:
        holder = pool.submit(client.get, "/api/v1/datasets", params={"q": unique_word()})
        time.sleep(0.3)  # the first request holds the only turn

        def timed(path: str, headers: dict[str, str]) -> tuple[Any, float]:
            started = time.monotonic()
            response = client.get(path, headers=headers)
            return response, time.monotonic() - started

        refused_json = pool.submit(timed, f"/api/v1/datasets?q={unique_word()}", {})
        refused_page = pool.submit(timed, f"/datasets?q={unique_word()}", {"Accept": "text/html"})
        json_answer, json_seconds = refused_json.result(5)
        page_answer, page_seconds = refused_page.result(5)
        release.set()
        assert holder.result(10).status_code == 200

    assert json_answer.status_code == 503 and json_answer.headers["retry-after"] == "1"
    body = json_answer.json()
    assert body["ok"] is False and body["status"] == 503 and "capacity" in body["error"]
    assert json_seconds < 1.5
    assert page_answer.status_code == 503 and page_answer.headers["retry-after"] == "1"
    assert "text/html" in page_answer.headers["content-type"] and "capacity" in page_answer.text
    assert page_seconds < 1.5
    assert page_answer.headers["x-content-type-options"] == "nosniff"  # still inside the security headers


def test_static_files_skip_the_queue(one_turn_app: tuple[Any, threading.Event]) -> None:
    app, release = one_turn_app
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        holder = pool.submit(client.get, "/api/v1/datasets", params={"q": unique_word()})
        time.sleep(0.3)
        assert client.get("/static/app.css").status_code == 200
        release.set()
        assert holder.result(10).status_code == 200


def test_an_exhausted_connection_pool_is_a_503_with_retry_after(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from app.search import service

    def exhausted(*_args: Any, **_kwargs: Any) -> Any:
        raise PoolTimeout("QueuePool limit of size 8 overflow 8 reached, connection timed out, timeout 5.00")

    monkeypatch.setattr(service, "search_datasets", exhausted)
    response = client.get("/api/v1/datasets", params={"q": unique_word()})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["status"] == 503


def test_the_pool_holds_two_connections_per_turn_and_gives_up_after_seconds_not_30(
    configured_services: None,
) -> None:
    from app.core.db import get_engine

    engine = get_engine()
    turns = get_settings().web_concurrency
    assert engine.pool.size() == turns  # type: ignore[attr-defined]
    assert engine.pool._max_overflow == turns  # type: ignore[attr-defined]
    assert engine.pool._timeout <= 5  # type: ignore[attr-defined]


# --- caches never serve a stale or another visitor's answer --------------------------------------------------


# another connection changes the version while this test's session holds the row: only committed work is visible
# (and unlocked) to it
@pytest.mark.commits
def test_a_version_change_made_elsewhere_shows_within_the_ttl_and_one_made_here_at_once(
    session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from app.catalog import service as catalog

    monkeypatch.setattr(catalog, "CATALOG_VERSION_TTL", 0.3)
    catalog.forget_catalog_version()
    before = catalog.catalog_version(session)
    session.rollback()
    # another process bumps the version (a plain connection: no ORM event sees it)
    url = get_settings().database_url or ""
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as other:
        other.execute("UPDATE catalog_state SET version = version + 1")
    try:
        assert catalog.catalog_version(session) == before  # within the TTL: the remembered one
        time.sleep(0.35)
        assert catalog.catalog_version(session) == before + 1
        # this process commits a change through the ORM: seen at once, TTL or not
        monkeypatch.setattr(catalog, "CATALOG_VERSION_TTL", 3600)
        catalog._state(session).version += 1
        session.commit()
        assert catalog.catalog_version(session) == before + 2
    finally:
        with psycopg.connect(plain, autocommit=True) as other:
            other.execute("UPDATE catalog_state SET version = %s", (before,))
        catalog.forget_catalog_version()


def test_cached_search_json_matches_a_fresh_computation_and_reports_its_own_time(session: Any) -> None:
    from app.search import service
    from app.search.schemas import SearchFilter

    search = service.normalise_filter(SearchFilter(terms={"modality": ["CT"]}, q="liver"))
    first = json.loads(service.search_json(session, search, base_path="/api/v1/datasets"))
    again = json.loads(service.search_json(session, search, base_path="/api/v1/datasets"))
    fresh = service.search_datasets(session, search, base_path="/api/v1/datasets").model_dump(mode="json")
    for answer in (first, again):
        timing = answer.pop("timing_ms")
        assert isinstance(timing, float) and timing >= 0
    fresh.pop("timing_ms")
    assert first == again == fresh
    assert fresh["count"] > 0


def test_kept_answers_do_not_grow_what_the_garbage_collector_scans(session: Any) -> None:
    """Kept answers are bytes: keeping response objects added thousands of tracked objects per search, and
    full collections over them paused a web process for most of a second under load."""
    from app.search import service
    from app.search.schemas import SearchFilter

    words = ["liver", "brain", "lung", "kidney", "heart", "breast", "prostate", "skin", "retina", "colon"]
    searches = [
        service.normalise_filter(SearchFilter(terms={"modality": [modality]}, q=word))
        for modality in ("CT", "MRI", "X-ray", "ultrasound")
        for word in words
    ]
    for search in searches[:5]:  # warm: index, vocabularies, row cache
        service.search_json(session, search)
    gc.collect()
    before = len(gc.get_objects())
    for search in searches:
        service.search_json(session, search)
        service.search_json(session, search, page_size=10)
    gc.collect()
    grown = len(gc.get_objects()) - before
    assert grown < 100 * len(searches), grown  # an object cache grew by about 2,000 per search


def test_anonymous_pages_are_shared_but_a_visitor_with_a_selection_sees_their_own(client: TestClient) -> None:
    slug = client.get("/api/v1/datasets", params={"page_size": 1}).json()["results"][0]["slug"]
    anonymous = client.get(f"/datasets/{slug}")
    assert anonymous.status_code == 200
    # a visitor puts the dataset in a selection (same-site form post; the cookie names the selection)
    added = client.post(
        "/selection/add", data={"slug": slug}, headers={"Origin": "http://testserver"}, follow_redirects=False
    )
    assert added.status_code in (200, 303), added.text[:300]
    assert client.cookies.get("imagingx_selection")
    personal = client.get(f"/datasets/{slug}")
    assert "/selection/remove" in personal.text and "/selection/remove" not in anonymous.text
    assert personal.text != anonymous.text
    # a cookie-less visitor still gets the shared page, with nothing of the other visitor's selection
    with TestClient(client.app) as stranger:
        shared = stranger.get(f"/datasets/{slug}")
    assert shared.text == anonymous.text


def test_the_version_read_is_one_query_per_ttl_not_one_per_request(client: TestClient, session: Any) -> None:
    from sqlalchemy import event

    from app.catalog import service as catalog
    from app.core.db import get_engine

    catalog.forget_catalog_version()
    client.get("/api/v1/datasets")
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "catalog_state" in statement:
            seen.append(statement)

    event.listen(get_engine(), "before_cursor_execute", count)
    try:
        for _ in range(5):
            assert client.get("/api/v1/datasets").status_code == 200
    finally:
        event.remove(get_engine(), "before_cursor_execute", count)
    assert len(seen) <= 1
    assert session.execute(text("SELECT 1")).scalar_one() == 1


def test_kept_bytes_are_bounded_in_total_and_the_least_recently_used_go_first() -> None:
    from app.core.cache import VersionedCache

    cache: VersionedCache[bytes] = VersionedCache(maxsize=100, max_bytes=1000)
    for number in range(20):
        cache.get_or_compute(number, lambda: b"x" * 100)
        if number == 12:
            cache.get_or_compute(11, lambda: b"never computed: 11 is kept")  # 11 becomes the most recent
    assert cache.size_bytes <= 1000
    kept = cache.get_many(list(range(20)))
    assert 11 in kept and 19 in kept and 0 not in kept
    assert len(kept) == 10
    cache.put_many({19: b"y" * 10})  # replacing a value counts its new size only
    assert cache.size_bytes == 9 * 100 + 10
