"""The search relevance bench: nDCG@10, recall@20 and zero-result rate of our search beside plain PostgreSQL
full text, over the evaluation set in bench/relevance/queries.json.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python -m bench.relevance.run --fresh
    .venv/bin/python -m bench.relevance.run --database-url postgresql://...   # a database holding the catalog
    ... --per-query         # every query's figures, the worst first
    ... --record --readme   # write recorded.json (the regression floor) and the table in bench/README.md

--fresh makes a throwaway database on DATABASE_URL's server, migrates it, imports the seed catalog, runs and
drops it. Metrics are computed in-process through the same service call the API makes.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.relevance.evaluate import (
    RECORDED,
    Scores,
    baseline,
    canonical_judgments,
    load_queries,
    ours,
    score,
)

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- bench:relevance:begin -->", "<!-- bench:relevance:end -->"


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(server_url.replace("postgresql+psycopg://", "postgresql://"))
    name = f"imagingx_relevance_{secrets.token_hex(4)}"
    admin = dict(host=server.host or "127.0.0.1", port=server.port or 5432, user=server.username,
                 password=server.password, dbname=server.database or "postgres", autocommit=True)  # fmt: skip
    with psycopg.connect(**admin) as connection:  # type: ignore[arg-type]
        connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(**admin) as connection:  # type: ignore[arg-type]
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def evaluate(database_url: str, fresh: bool) -> tuple[Scores, Scores, int]:
    os.environ["DATABASE_URL"] = database_url
    from sqlalchemy.orm import Session

    from app.core.config import get_settings
    from app.core.db import get_engine, run_migrations

    get_settings.cache_clear()
    if fresh:
        from app.stack import load_catalog

        run_migrations(database_url)
        load_catalog()
    with Session(get_engine()) as session:
        queries = canonical_judgments(session, load_queries())
        return score(queries, ours(session)), score(queries, baseline(session)), len(queries)


def table(mine: Scores, base: Scores, n: int) -> str:
    rows = [
        f"Evaluation set: {n} queries (bench/relevance/queries.json), graded 0-3.",
        "",
        "| system | nDCG@10 | recall@20 | zero-result rate |",
        "|---|---|---|---|",
    ]
    for label, s in (
        ("ours (API search)", mine),
        ("PostgreSQL full text (websearch_to_tsquery + ts_rank)", base),
    ):
        rows.append(f"| {label} | {s.ndcg10:.3f} | {s.recall20:.3f} | {100 * s.zero_rate:.1f} % |")
    kinds = sorted({row["kind"] for row in mine.per_query})
    rows += ["", "| query kind | queries | ours nDCG@10 | baseline nDCG@10 | ours zero | baseline zero |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for kind in kinds:
        a = [r for r in mine.per_query if r["kind"] == kind]
        b = [r for r in base.per_query if r["kind"] == kind]
        rows.append(
            f"| {kind} | {len(a)} | {sum(r['ndcg@10'] for r in a) / len(a):.3f} | "
            f"{sum(r['ndcg@10'] for r in b) / len(b):.3f} | {sum(r['count'] == 0 for r in a)} | "
            f"{sum(r['count'] == 0 for r in b)} |"
        )
    return "\n".join(rows)


def write_readme(body: str) -> None:
    text = README.read_text(encoding="utf-8")
    section = f"{BEGIN}\n{body}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n## Search relevance\n\n" + section + "\n"
    README.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--fresh", action="store_true", help="a throwaway database with the seed catalog")
    parser.add_argument("--per-query", action="store_true")
    parser.add_argument("--record", action="store_true", help="write recorded.json from this run")
    parser.add_argument("--readme", action="store_true", help="rewrite the table in bench/README.md")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("give --database-url or set DATABASE_URL")
    if args.fresh:
        with fresh_database(args.database_url) as url:
            mine, base, n = evaluate(url, fresh=True)
    else:
        mine, base, n = evaluate(args.database_url, fresh=False)
    body = table(mine, base, n)
    print(body)
    if args.per_query:
        print()
        pairs = sorted(zip(mine.per_query, base.per_query, strict=True), key=lambda p: p[0]["ndcg@10"])
        for a, b in pairs:
            print(f"{a['ndcg@10']:.3f} {a['recall@20']:.2f} n={a['count']:<4} | base {b['ndcg@10']:.3f} "
                  f"n={b['count']:<4} | {a['kind']:<9} {a['q']}")  # fmt: skip
    if args.record:
        RECORDED.write_text(
            json.dumps({"ours": mine.summary(), "baseline": base.summary(), "queries": n}, indent=1) + "\n",
            encoding="utf-8",
        )
    if args.readme:
        write_readme(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
