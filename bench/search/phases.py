"""Where a search request's time goes: the query mix run in-process, each phase of search_datasets timed.

    .venv/bin/python -m bench.search.phases --size 100k [--reps 20]

Wraps (without changing them) the service functions a search calls and times each call; also times the
response's JSON serialisation (what FastAPI does with the returned model). No HTTP, no threads: the numbers
are the server-side CPU and database time one request costs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from typing import Any

from bench.search.run import QUERIES, percentile, search_filter
from bench.search.synth import db_url, parse_size, source_rows

PHASES = ("catalog_version", "current_index", "text_matches", "_ordered_positions", "_near_match_positions", "_fetch_by_id",
          "facet_counts", "summarise", "missed_reasons")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="real")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    n = parse_size(args.size)
    url = db_url(len(source_rows()) if n is None else n)

    from app.core.db import new_session
    from app.search import service
    from app.search.filters import decode_cursor, encode_cursor

    spent: dict[str, list[float]] = defaultdict(list)
    current: dict[str, float] = defaultdict(float)

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                current[name] += time.perf_counter() - t

        return wrapper

    for name in PHASES:
        setattr(service, name, timed(name, getattr(service, name)))

    per_query: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with new_session(url) as session:
        service.search_datasets(session, search_filter(QUERIES[0]))  # builds the index
        for rep in range(args.reps + 1):
            for query in QUERIES:
                current.clear()
                cursor = encode_cursor(25 * query.pages) if query.pages else None
                t = time.perf_counter()
                response = service.search_datasets(
                    session, search_filter(query), cursor=cursor, base_path="/api/v1/datasets"
                )
                current["search_datasets (total)"] = time.perf_counter() - t
                t = time.perf_counter()
                response.model_dump_json()
                current["serialise response"] = time.perf_counter() - t
                session.rollback()
                if rep:
                    for name, seconds in current.items():
                        per_query[query.name][name].append(seconds * 1000)
                        spent[name].append(seconds * 1000)
    assert decode_cursor(encode_cursor(100)) == 100
    names = ["search_datasets (total)", *PHASES, "serialise response"]
    print(f"size {args.size}: ms per request, p50 over {args.reps} rounds of the {len(QUERIES)}-query mix")
    header = "| query | " + " | ".join(names) + " |"
    print(header)
    print("|---" * (len(names) + 1) + "|")
    for query in QUERIES:
        cells = [f"{percentile(per_query[query.name].get(n, []), 50) or 0:.1f}" for n in names]
        print(f"| {query.name} | " + " | ".join(cells) + " |")
    all_cells = [f"{percentile(spent.get(n, []), 50) or 0:.1f}" for n in names]
    print("| all (p50) | " + " | ".join(all_cells) + " |")
    print(json.dumps({n: round(percentile(spent.get(n, []), 95) or 0, 2) for n in names}))


if __name__ == "__main__":
    main()
