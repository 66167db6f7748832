"""What the HTTP layer costs a search request, without the search: the route's dependencies measured alone.

    .venv/bin/python -m bench.search.overhead [--requests 2000]

Serves a small FastAPI app (built here, not the app's) on 127.0.0.1 with uvicorn, one worker, and times
sequential GETs with the real catalog's query strings against routes that return a constant small JSON body:

- `bare`: no dependencies at all (uvicorn + FastAPI + the client);
- `session_sync` / `session`: a `SELECT 1` on a pooled PostgreSQL session from the sync generator dependency
  the app used before (`app.core.db.get_session`: two thread-pool hops per request) / from the app's
  SessionDep (async, one hop, to close);
- `filter_declared`: the filter as the app read it before: ~20 query parameters declared one by one (FastAPI
  parses and validates each), then `parse_filter` reads the raw query string again;
- `filter_model`: the app's SearchFilterDep (the same parameters declared as one query model, for routes
  that document them by declaration, e.g. exports);
- `filter_raw`: the app's QueryStringFilterDep (nothing declared; `parse_filter` on the raw query string),
  which the search routes take;
- `search_deps`: SessionDep + QueryStringFilterDep + FacetSizeDep, what /api/v1/datasets declares (no query).

The difference between `search_deps` and `bare` is what the search route's dependencies cost per request.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

# module level, not inside build_app: FastAPI resolves the routes' annotations against module globals
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.api.deps import FacetSizeDep, QueryStringFilterDep, SearchFilterDep, SessionDep
from app.core.db import get_session
from app.search.filters import parse_filter
from app.search.schemas import SearchFilter

REPO = Path(__file__).resolve().parents[2]


async def filter_declared_one_by_one(
    request: Request,
    q: Annotated[str | None, Query()] = None,
    modality: Annotated[list[str] | None, Query()] = None,
    anatomy: Annotated[list[str] | None, Query()] = None,
    task: Annotated[list[str] | None, Query()] = None,
    dim: Annotated[list[str] | None, Query()] = None,
    access: Annotated[list[str] | None, Query()] = None,
    labeled: Annotated[list[str] | None, Query()] = None,
    host: Annotated[list[str] | None, Query()] = None,
    year: Annotated[list[str] | None, Query()] = None,
    size: Annotated[list[str] | None, Query()] = None,
    licence: Annotated[list[str] | None, Query()] = None,
    quality: Annotated[list[str] | None, Query()] = None,
    year__gte: Annotated[str | None, Query()] = None,
    year__lte: Annotated[str | None, Query()] = None,
    images__gte: Annotated[str | None, Query()] = None,
    images__lte: Annotated[str | None, Query()] = None,
    sort: Annotated[str | None, Query()] = None,
    order: Annotated[str | None, Query()] = None,
    prefer_open: Annotated[str | None, Query()] = None,
) -> SearchFilter:
    """app/api/deps.py's search filter dependency before this measurement led to QueryStringFilterDep."""
    ignored = {"page_size", "_next", "_facet_size"}
    return parse_filter((k, v) for k, v in request.query_params.multi_items() if k not in ignored)


def build_app() -> FastAPI:  # imported by uvicorn in the child process
    app = FastAPI()
    body = {"ok": True}

    @app.get("/bare")
    def bare() -> dict:
        return body

    @app.get("/session_sync")
    def session_sync(session: Session = Depends(get_session)) -> dict:
        session.execute(text("SELECT 1"))
        return body

    @app.get("/session")
    def session(session: SessionDep) -> dict:
        session.execute(text("SELECT 1"))
        return body

    @app.get("/filter_declared")
    def filter_declared(search: SearchFilter = Depends(filter_declared_one_by_one)) -> dict:
        return body

    @app.get("/filter_model")
    def filter_model(search: SearchFilterDep) -> dict:
        return body

    @app.get("/filter_raw")
    def filter_raw(search: QueryStringFilterDep) -> dict:
        return body

    @app.get("/search_deps")
    def search_deps(session: SessionDep, search: QueryStringFilterDep, facet_size: FacetSizeDep) -> dict:
        return body

    return app


def main() -> None:
    import httpx

    from bench.search.run import QUERIES, free_port
    from bench.search.synth import db_url, source_rows

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per route")
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url(len(source_rows())), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "bench.search.overhead:build_app", "--port", str(port),
         "--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"],
        cwd=REPO, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(base + "/bare", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        queries = ["?" + httpx.QueryParams(q.params).__str__() if q.params else "" for q in QUERIES]
        routes = [
            "bare",
            "session_sync",
            "session",
            "filter_declared",
            "filter_model",
            "filter_raw",
            "search_deps",
        ]
        timings: dict[str, list[float]] = {r: [] for r in routes}
        with httpx.Client() as client:
            for i in range(args.requests):
                for route in routes:  # interleaved, so every route sees the same conditions
                    url = f"{base}/{route}{queries[i % len(queries)]}"
                    t = time.perf_counter()
                    client.get(url).raise_for_status()
                    if i >= 50:
                        timings[route].append((time.perf_counter() - t) * 1000)
        print(
            f"{'route':<14} {'p50 ms':>8} {'p95 ms':>8}  (sequential, {len(timings['bare'])} requests each)"
        )
        for route, values in timings.items():
            values.sort()
            p50, p95 = values[len(values) // 2], values[int(len(values) * 0.95)]
            print(f"{route:<14} {p50:8.2f} {p95:8.2f}")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
