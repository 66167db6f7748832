"""In-process timings of text search over the evaluation queries (no HTTP, no kept answers): the text match
alone (`app.search.service.text_matches`) and a whole uncached search (`search_datasets`, facets included).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/<a database holding the catalog> \\
        .venv/bin/python -m bench.relevance.timing [--reps 3]

Each query is run once first (index builds, first use of its words), then `reps` rounds; the kept text matches
and JSON answers are cleared before every timed search. To compare with another checkout, run the same command
from that checkout's folder with PYTHONPATH=. so that its `app` package is the one imported.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.relevance.evaluate import load_queries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    from sqlalchemy.orm import Session

    from app.core.db import get_engine
    from app.search import service
    from app.search.schemas import SearchFilter

    queries = [query.q for query in load_queries()]
    matches: list[float] = []
    searches: list[float] = []
    with Session(get_engine()) as session:
        for q in queries:
            service.search_datasets(session, SearchFilter(q=q), page_size=20)
        for _ in range(args.reps):
            for q in queries:
                started = time.perf_counter()
                service.text_matches(session, q)
                matches.append((time.perf_counter() - started) * 1000)
                service._text_matches.clear()
                service._json_answers.clear()
                started = time.perf_counter()
                service.search_datasets(session, SearchFilter(q=q), page_size=20)
                searches.append((time.perf_counter() - started) * 1000)
    for label, times in (("text_matches", matches), ("search_datasets, uncached", searches)):
        p95 = statistics.quantiles(times, n=20)[18]
        print(f"{label:<27} median {statistics.median(times):6.2f} ms   p95 {p95:6.2f} ms   n={len(times)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
