"""The search evaluation set (bench/relevance/queries.json): our search must not fall below the figures recorded
in bench/relevance/recorded.json, nor below the issue's targets."""

import sys
from pathlib import Path

from sqlalchemy.orm import Session

# bench/ is a folder of scripts beside the package, importable from the repository root (python -m pytest
# puts it on the path; the pytest script does not)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.relevance.evaluate import canonical_judgments, load_queries, ours, recorded, score


def test_the_evaluation_set_is_large_and_judged() -> None:
    queries = load_queries()
    assert len(queries) >= 80
    assert len({q.q.lower() for q in queries}) == len(queries)
    assert all(q.judgments and max(q.judgments.values()) >= 2 for q in queries)
    assert all(set(q.judgments.values()) <= {1, 2, 3} for q in queries)
    kinds = {q.kind for q in queries}
    assert {"name", "number", "full name", "concept", "phrase", "typo", "language"} <= kinds


def test_our_search_keeps_its_recorded_relevance(session: Session) -> None:
    queries = canonical_judgments(session, load_queries())
    assert all(q.judgments for q in queries)  # every judged dataset is still in the catalog (maybe merged)
    mine = score(queries, ours(session))
    floor = recorded()
    assert mine.ndcg10 >= floor["ndcg@10"] - 1e-3 and mine.ndcg10 >= 0.85, mine.summary()
    assert mine.recall20 >= floor["recall@20"] - 1e-3, mine.summary()
    assert mine.zero_rate <= floor["zero_result_rate"] + 1e-9 and mine.zero_rate < 0.03, mine.summary()
