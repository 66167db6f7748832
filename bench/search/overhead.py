"""What the HTTP layer costs a search request, without the search: the route's dependencies measured alone.

    /work/venv/bin/python -m bench.search.overhead [--requests 2000]

Serves a small FastAPI app (built here, not the app's) on 127.0.0.1 with uvicorn, one worker, and times
sequential GETs with the real catalog's query strings against routes that return a constant small JSON body:

- `bare`: no dependencies at all (uvicorn + FastAPI + the client);
- `session`: the app's SessionDep only (a pooled PostgreSQL session per request);
- `filter`: the app's SearchFilterDep + FacetSizeDep (the ~20 declared query parameters FastAPI parses and
  validates, then `parse_filter` reads the raw query string again);
- `all_deps`: SessionDep + SearchFilterDep + FacetSizeDep, what /api/v1/datasets declares;
- `filter_async`: the same filter parsing in one `async def` dependency that reads `request.query_params`
  directly (what the proposal in bench/README.md would do: no threadpool hop, no per-parameter validation).

The difference between `all_deps` and `bare` is what the dependencies cost per request.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

# module level, not inside build_app: FastAPI resolves the routes' annotations against module globals
from fastapi import Depends, FastAPI, Request

from app.api.deps import FacetSizeDep, SearchFilterDep, SessionDep
from app.search.schemas import SearchFilter
from app.search.service import parse_filter

REPO = Path(__file__).resolve().parents[2]


def build_app() -> FastAPI:  # imported by uvicorn in the child process
    app = FastAPI()
    body = {"ok": True}

    @app.get("/bare")
    def bare() -> dict:
        return body

    @app.get("/session")
    def session(session: SessionDep) -> dict:
        return body

    @app.get("/filter")
    def filter_only(search: SearchFilterDep, facet_size: FacetSizeDep) -> dict:
        return body

    @app.get("/all_deps")
    def all_deps(session: SessionDep, search: SearchFilterDep, facet_size: FacetSizeDep) -> dict:
        return body

    async def filter_from_raw_query(request: Request) -> SearchFilter:
        ignored = {"page_size", "_next", "_facet_size"}
        return parse_filter((k, v) for k, v in request.query_params.multi_items() if k not in ignored)

    @app.get("/filter_async")
    def filter_async(search: SearchFilter = Depends(filter_from_raw_query)) -> dict:
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
        routes = ["bare", "session", "filter", "all_deps", "filter_async"]
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
