"""The search evaluation: graded judgments (queries.json beside this file), our search and a plain PostgreSQL
full-text baseline over the same records, and the metrics (nDCG@10, recall@20, zero-result rate).

nDCG@10 uses gains 2^grade - 1 and the ideal order of all of a query's judgments; recall@20 is the share of a
query's relevant datasets (grade 2 or 3) in its first 20 results, out of at most 20; the zero-result rate is
the share of queries with no result at all. Judged slugs are read through the catalog's canonical slug when
the catalog offers one (merged records), keeping the highest grade of the slugs that merged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

QUERIES = Path(__file__).resolve().parent / "queries.json"
RECORDED = Path(__file__).resolve().parent / "recorded.json"


@dataclass(frozen=True)
class Query:
    q: str
    kind: str
    judgments: dict[str, int]


@dataclass
class Scores:
    ndcg10: float
    recall20: float
    zero_rate: float
    per_query: list[dict[str, Any]]

    def summary(self) -> dict[str, float]:
        return {
            "ndcg@10": round(self.ndcg10, 4),
            "recall@20": round(self.recall20, 4),
            "zero_result_rate": round(self.zero_rate, 4),
        }


def load_queries(path: Path = QUERIES) -> list[Query]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Query(item["q"], item["kind"], dict(item["judgments"])) for item in data["queries"]]


def canonical_judgments(session: Session, queries: list[Query]) -> list[Query]:
    """The judgments with every slug read as the catalog names that dataset now (`canonical_slugs`: a slug merged
    into another dataset counts for it, at its best grade), in one lookup."""
    from app.catalog.service import canonical_slugs

    now = canonical_slugs(session, [slug for query in queries for slug in query.judgments])
    out = []
    for query in queries:
        merged: dict[str, int] = {}
        for slug, grade in query.judgments.items():
            target = now.get(slug)
            if target is None:  # a judged record that no longer exists counts as unjudged
                continue
            merged[target] = max(grade, merged.get(target, 0))
        out.append(Query(query.q, query.kind, merged))
    return out


def dcg(gains: list[int]) -> float:
    return sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(gains))


def score(queries: list[Query], ranked: Callable[[str], tuple[list[str], int]]) -> Scores:
    """Run `ranked(q) -> (first 20 slugs, total count)` for every query and compute the metrics."""
    ndcgs, recalls, zeros, rows = [], [], 0, []
    for query in queries:
        slugs, count = ranked(query.q)
        gains = [query.judgments.get(slug, 0) for slug in slugs[:10]]
        ideal = dcg(sorted(query.judgments.values(), reverse=True)[:10])
        ndcg = dcg(gains) / ideal if ideal > 0 else 0.0
        relevant = {slug for slug, grade in query.judgments.items() if grade >= 2}
        recall = len(relevant & set(slugs[:20])) / min(20, len(relevant)) if relevant else float(ndcg > 0)
        zeros += count == 0
        ndcgs.append(ndcg)
        recalls.append(recall)
        rows.append({"q": query.q, "kind": query.kind, "ndcg@10": ndcg, "recall@20": recall, "count": count})
    n = max(1, len(queries))
    return Scores(sum(ndcgs) / n, sum(recalls) / n, zeros / n, rows)


def ours(session: Session) -> Callable[[str], tuple[list[str], int]]:
    """Our search as the API runs it (relevance order, no facets)."""
    from app.search.schemas import SearchFilter
    from app.search.service import search_datasets

    def ranked(q: str) -> tuple[list[str], int]:
        response = search_datasets(session, SearchFilter(q=q), page_size=20, with_facets=False)
        return [r.slug for r in response.results], response.count

    return ranked


_BASELINE = text(
    "SELECT slug, count(*) OVER () AS total FROM ("
    "  SELECT slug, ts_rank(to_tsvector('english', name || ' ' || search_document), query) AS rank"
    "  FROM dataset, websearch_to_tsquery('english', :q) AS query"
    "  WHERE to_tsvector('english', name || ' ' || search_document) @@ query) AS hits "
    "ORDER BY rank DESC, slug LIMIT 20"
)


def baseline(session: Session) -> Callable[[str], tuple[list[str], int]]:
    """Plain PostgreSQL full text over the same records' text: websearch_to_tsquery and ts_rank."""

    def ranked(q: str) -> tuple[list[str], int]:
        rows = session.execute(_BASELINE, {"q": q}).all()
        return [row.slug for row in rows], int(rows[0].total) if rows else 0

    return ranked


def recorded() -> dict[str, float]:
    """The figures our search reached when last recorded (bench/relevance/run.py --record)."""
    data: dict[str, float] = json.loads(RECORDED.read_text(encoding="utf-8"))["ours"]
    return data
