"""Help for a search that found nothing: spellings the catalog knows ("did you mean"), the words that could be
dropped and the filters that could be relaxed, each with the number of datasets the changed search finds and
its link. Only searches with no result pay for this (a few text evaluations and bitmap counts)."""

import numpy as np
from sqlalchemy.orm import Session

from app.catalog.service import catalog_version
from app.search.facets import value_label
from app.search.filters import filter_pairs, query_string, without_range
from app.search.index import CatalogIndex
from app.search.matching import Constraint
from app.search.schemas import RANGE_FIELDS, SearchFilter, Suggestion, ZeroResultHelp
from app.search.text_index import TextIndex, current_text_index
from app.search.text_query import evaluate
from app.search.tokens import SOFT_WORDS, fold, query_words, split_runs

MAX_SUGGESTIONS = 5


def zero_result_help(
    session: Session,
    index: CatalogIndex,
    search: SearchFilter,
    base: np.ndarray,
    constraints: list[Constraint],
    base_path: str,
) -> ZeroResultHelp:
    """Ways out of an empty result, each with its count under the rest of the search; only those that find
    something are listed, the most results first."""
    help_ = ZeroResultHelp()
    facets_bitmap = index.all.copy()
    for constraint in constraints:
        facets_bitmap &= constraint.bitmap
    if search.q:
        text = current_text_index(session, catalog_version(session))
        help_.did_you_mean = _spellings(text, index, search, facets_bitmap, base_path)
        help_.drop_words = _drops(text, index, search, facets_bitmap, base_path)
    for constraint in constraints:
        others = base.copy()
        for other in constraints:
            if other is not constraint:
                others &= other.bitmap
        count = index.count(others)
        if count:
            relaxed, label = _relaxed(search, constraint.key)
            help_.relax.append(
                Suggestion(kind="relax", label=label, count=count, url=_url(base_path, relaxed))
            )
    help_.relax.sort(key=lambda s: -s.count)
    return help_


def _count(text: TextIndex, index: CatalogIndex, q: str, within: np.ndarray) -> int:
    matched = evaluate(text, q)
    return index.count(index.pack_positions(matched.positions) & within)


def _spellings(
    text: TextIndex, index: CatalogIndex, search: SearchFilter, within: np.ndarray, base_path: str
) -> list[Suggestion]:
    """Each typed word the catalog does not know (or knows only in few datasets) replaced by a close catalog
    word: one edit for short words, two for long ones."""
    q = search.q or ""
    runs = split_runs(q)
    found: list[Suggestion] = []
    for position, run in enumerate(runs):
        words = query_words(run)
        if len(words) != 1 or words[0] in SOFT_WORDS or text.df.get(words[0], 0) >= 3:
            continue
        budget = 1 if len(run) <= 7 else 2
        for _, term in text.close(words[0], budget)[:3]:
            replacement = text.surface.get(term, term)
            changed = " ".join([*runs[:position], replacement, *runs[position + 1 :]])
            count = _count(text, index, changed, within)
            if count and fold(changed) != fold(q):
                found.append(
                    Suggestion(
                        kind="spelling",
                        label=changed,
                        count=count,
                        url=_url(base_path, search.model_copy(update={"q": changed})),
                    )
                )
    return sorted(found, key=lambda s: -s.count)[:MAX_SUGGESTIONS]


def _drops(
    text: TextIndex, index: CatalogIndex, search: SearchFilter, within: np.ndarray, base_path: str
) -> list[Suggestion]:
    """The search without one of its words, for each word (a one-word query drops to the filters alone)."""
    runs = split_runs(search.q or "")
    found = []
    for position, run in enumerate(runs):
        rest = " ".join(runs[:position] + runs[position + 1 :])
        count = _count(text, index, rest, within) if rest else index.count(within)
        if count:
            found.append(
                Suggestion(
                    kind="drop_word",
                    label=f'without "{run}"',
                    count=count,
                    url=_url(base_path, search.model_copy(update={"q": rest or None})),
                )
            )
    return sorted(found, key=lambda s: -s.count)[:MAX_SUGGESTIONS]


def _relaxed(search: SearchFilter, key: str) -> tuple[SearchFilter, str]:
    if key.startswith("range:"):
        name = key.removeprefix("range:")
        return without_range(search, name), f"any {RANGE_FIELDS.get(name, name).lower()}"
    values = search.terms.get(key, [])
    shown = ", ".join(value_label(key, v) for v in values)
    terms = {k: v for k, v in search.terms.items() if k != key}
    return search.model_copy(update={"terms": terms}), f"without {key}: {shown}"


def _url(base_path: str, search: SearchFilter) -> str:
    return f"{base_path}{query_string(filter_pairs(search))}"
