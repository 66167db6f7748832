"""Text search over HTTP as a first-time searcher meets it: every request is one the portal has not answered
before, so no kept answer serves it (issue 11's target: API search p95 <= 15 ms at the real size).

    .venv/bin/python -m bench.relevance.http_timing --url http://127.0.0.1:8000 [--rounds 5]

Against a running portal (`imagingx serve`, or `imagingx web` on a database holding the catalog). Each
evaluation query is asked once per round with a page size no earlier request used (20, 21, 22, ...; rerun on
the same portal with a larger --start): the kept JSON answers are keyed by the whole request, so each request
is computed (text match, facet counts, rows). The first round also builds the indexes when the portal has just
started; it is not counted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from bench.relevance.evaluate import load_queries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--start", type=int, default=20, help="first page size (run again on the same portal: a larger one)"
    )
    args = parser.parse_args(argv)
    queries = [query.q for query in load_queries()]
    timings: list[float] = []
    with httpx.Client(base_url=args.url, timeout=30) as client:
        for round_number in range(args.rounds + 1):
            page_size = args.start + round_number  # a page size of its own per round: never a kept answer
            for q in queries:
                started = time.perf_counter()
                response = client.get("/api/v1/datasets", params={"q": q, "page_size": page_size})
                elapsed = (time.perf_counter() - started) * 1000
                response.raise_for_status()
                if round_number:  # round 0 warms the indexes up
                    timings.append(elapsed)
    p95 = statistics.quantiles(timings, n=20)[18]
    print(
        f"GET /api/v1/datasets?q=..., uncached: median {statistics.median(timings):.2f} ms, "
        f"p95 {p95:.2f} ms, max {max(timings):.2f} ms, n={len(timings)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
