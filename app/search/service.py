"""Searching the catalog: one function per operation, called alike by pages, the JSON API and the CLI."""

import base64
import binascii
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote_plus, urlencode

import numpy as np
from pydantic import TypeAdapter
from sqlalchemy import BigInteger, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from app.catalog.models import Dataset
from app.catalog.service import SUMMARY_COLUMNS, catalog_version, summarise
from app.common.errors import InvalidInput
from app.common.vocabularies import ALL
from app.core.cache import VersionedCache
from app.core.config import get_settings
from app.search.index import CatalogIndex, current_index
from app.search.schemas import (
    FACETS,
    RANGE_FIELDS,
    Facet,
    FacetValue,
    NearMatch,
    Order,
    Range,
    SearchFilter,
    SearchResponse,
    Sort,
)

CONTROL_PARAMS = {"q", "sort", "order", "prefer_open", "page_size", "_next", "_facet_size"}


# -- reading a filter from a query string or a JSON body -------------------------------------------------------
def resolve_value(facet: str, value: str) -> str:
    """The canonical facet value for any accepted spelling, or a 422 that lists the allowed values."""
    spec = FACETS[facet]
    cleaned = value.strip()
    if facet == "year":
        if cleaned.isdigit() or cleaned.lower() == "unknown":
            return cleaned.lower()
        raise InvalidInput(["query", facet], f"year must be a number or 'unknown', not {value!r}")
    vocabulary = ALL[spec.vocabulary or facet]
    resolved = vocabulary.resolve(cleaned)
    if resolved is None:
        allowed = ", ".join(vocabulary.ids)
        raise InvalidInput(["query", facet], f"unknown {facet} {value!r}; allowed values: {allowed}")
    return resolved


def _parse_int(name: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise InvalidInput(["query", name], f"{name} must be an integer, not {value!r}") from None


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise InvalidInput(["query", name], f"{name} must be true or false, not {value!r}")


def parse_filter(params: Iterable[tuple[str, str]]) -> SearchFilter:
    """Read `modality=CT&modality=MR&year__gte=2018&q=liver&sort=images` into a SearchFilter (or a 422)."""
    terms: dict[str, list[str]] = {}
    ranges: dict[str, dict[str, int]] = {}
    fields: dict[str, str] = {}
    for key, value in params:
        if key in FACETS:
            if value.strip():
                resolved = resolve_value(key, value)
                if resolved not in terms.setdefault(key, []):
                    terms[key].append(resolved)
        elif "__" in key:
            name, _, op = key.partition("__")
            if name not in RANGE_FIELDS or op not in ("gte", "lte"):
                raise InvalidInput(
                    ["query", key],
                    f"unknown range {key!r}; use year__gte, year__lte, images__gte or images__lte",
                )
            if value.strip():
                ranges.setdefault(name, {})[op] = _parse_int(key, value)
        elif key in CONTROL_PARAMS:
            fields[key] = value
        else:
            allowed = ", ".join(
                [*FACETS, "year__gte", "year__lte", "images__gte", "images__lte", *CONTROL_PARAMS]
            )
            raise InvalidInput(["query", key], f"unknown parameter {key!r}; allowed: {allowed}")
    for name, bounds in ranges.items():
        if "gte" in bounds and "lte" in bounds and bounds["gte"] > bounds["lte"]:
            raise InvalidInput(["query", f"{name}__gte"], f"{name}__gte is larger than {name}__lte")
    return SearchFilter(
        q=(fields.get("q") or "").strip() or None,
        terms=terms,
        ranges={name: Range(**bounds) for name, bounds in ranges.items()},
        sort=_enum(Sort, "sort", fields.get("sort") or "relevance"),
        order=_enum(Order, "order", fields["order"]) if fields.get("order") else None,
        prefer_open=_parse_bool("prefer_open", fields.get("prefer_open", "false")),
    )


def _enum(kind: type[Sort] | type[Order], name: str, value: str) -> Sort | Order:
    try:
        return kind(value.strip().lower())
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise InvalidInput(["query", name], f"unknown {name} {value!r}; allowed: {allowed}") from None


def normalise_filter(search: SearchFilter) -> SearchFilter:
    """A filter that arrived as JSON gets the same synonym resolution and checks as a query string."""
    terms: dict[str, list[str]] = {}
    for facet, values in search.terms.items():
        if facet not in FACETS:
            raise InvalidInput(
                ["body", "terms", facet], f"unknown facet {facet!r}; allowed: {', '.join(FACETS)}"
            )
        terms[facet] = list(dict.fromkeys(resolve_value(facet, v) for v in values))
    for name, bounds in search.ranges.items():
        if name not in RANGE_FIELDS:
            raise InvalidInput(["body", "ranges", name], f"unknown range {name!r}; allowed: year, images")
        if bounds.gte is not None and bounds.lte is not None and bounds.gte > bounds.lte:
            raise InvalidInput(["body", "ranges", name], f"{name}: gte is larger than lte")
    return search.model_copy(update={"terms": terms})


def filter_pairs(search: SearchFilter) -> list[tuple[str, str]]:
    """The query-string form of a filter (used for toggle links, next links and the JSON twin link)."""
    pairs: list[tuple[str, str]] = []
    if search.q:
        pairs.append(("q", search.q))
    for facet in FACETS:
        pairs.extend((facet, value) for value in search.terms.get(facet, []))
    for name, bounds in search.ranges.items():
        pairs.extend(
            (f"{name}__{op}", str(v)) for op, v in (("gte", bounds.gte), ("lte", bounds.lte)) if v is not None
        )
    if search.sort != Sort.relevance:
        pairs.append(("sort", search.sort.value))
    if search.order is not None:
        pairs.append(("order", search.order.value))
    if search.prefer_open:
        pairs.append(("prefer_open", "true"))
    return pairs


def query_string(pairs: list[tuple[str, str]]) -> str:
    return "?" + urlencode(pairs) if pairs else "?"


def toggled(search: SearchFilter, facet: str, value: str) -> SearchFilter:
    selected = list(search.terms.get(facet, []))
    selected = [v for v in selected if v != value] if value in selected else [*selected, value]
    terms = {**search.terms, facet: selected}
    return search.model_copy(update={"terms": {k: v for k, v in terms.items() if v}})


def without_range(search: SearchFilter, name: str) -> SearchFilter:
    return search.model_copy(update={"ranges": {k: v for k, v in search.ranges.items() if k != name}})


# -- cursors ----------------------------------------------------------------------------------------------------
def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset = int(data["o"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidInput(
            ["query", "_next"], "invalid _next cursor: use the next_url of a response"
        ) from None
    if offset < 0:
        raise InvalidInput(["query", "_next"], "invalid _next cursor: use the next_url of a response")
    return offset


# -- the search itself ------------------------------------------------------------------------------------------
@dataclass
class Constraint:
    """One thing a strict match must satisfy; near matches are rows that miss one or two of these."""

    key: str
    bitmap: np.ndarray


def _constraints(index: CatalogIndex, search: SearchFilter) -> list[Constraint]:
    constraints = [
        Constraint(facet, index.facets[facet].union(values, index.words))
        for facet, values in search.terms.items()
        if values
    ]
    constraints += [
        Constraint(f"range:{name}", index.range_bitmap(name, bounds.gte, bounds.lte))
        for name, bounds in search.ranges.items()
        if bounds.gte is not None or bounds.lte is not None
    ]
    return constraints


_WORD = re.compile(r"[\w'-]+", re.UNICODE)

# Catalog words a query word may mean: the words it begins (cheap, an index range scan) or, when there are
# none, misspellings of it: trigram-similar words or words within two edits.
_PREFIX_WORDS = text("SELECT word FROM search_word WHERE word LIKE :prefix ORDER BY ndoc DESC LIMIT 50")
_CLOSE_WORDS = text(
    "SELECT word FROM (SELECT word FROM search_word WHERE word % :word "
    "UNION SELECT word FROM search_word WHERE length(:word) >= 5 AND word LIKE :start "
    "AND levenshtein_less_equal(word, :word, 2) <= 2) AS close "
    "ORDER BY similarity(word, :word) DESC LIMIT 20"
)


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def text_matches(session: Session, q: str) -> dict[int, float]:
    """Datasets matching every word of `q`, each word also matching catalog words close to it, with a score."""
    words = [w.lower() for w in _WORD.findall(q)][:8]
    alternatives: list[list[str]] = []
    for word in words:
        params = {"word": word, "prefix": _escape_like(word) + "%", "start": _escape_like(word[:2]) + "%"}
        close = [row.word for row in session.execute(_PREFIX_WORDS, params)]
        close = close or [row.word for row in session.execute(_CLOSE_WORDS, params)]
        if not close:
            return {}
        alternatives.append(close)
    if not alternatives:
        return {}
    # to_tsquery syntax built from catalog words only, each quoted as a literal
    query = " & ".join("(" + " | ".join(_quote_lexeme(w) for w in alts) + ")" for alts in alternatives)
    sql = text(
        "SELECT id, ts_rank(search_vector, query) AS score "
        "FROM dataset, to_tsquery('simple', :query) AS query WHERE search_vector @@ query"
    )
    return {row.id: float(row.score) for row in session.execute(sql, {"query": query})}


# The same words come back with other facets: their matches are kept per catalog version (read-only dicts).
_text_matches: VersionedCache[dict[int, float]] = VersionedCache(maxsize=2000)


def _quote_lexeme(word: str) -> str:
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass
class Match:
    """What a filter selects: the text matches (`base`), the facet and range constraints, the strict result."""

    base: np.ndarray
    constraints: list[Constraint]
    strict: np.ndarray
    scores: dict[int, float]

    def ordered_positions(self, index: CatalogIndex, search: SearchFilter) -> np.ndarray:
        return _ordered_positions(index, self.strict, search, self.scores)


def _match(session: Session, index: CatalogIndex, search: SearchFilter) -> Match:
    base = index.all
    scores: dict[int, float] = {}
    if search.q:
        scores = _text_matches.get_or_compute(
            (session.get_bind().url, index.version, search.q), lambda: text_matches(session, search.q)
        )
        base = index.pack_positions(index.positions_of_ids(np.fromiter(scores, np.int64, len(scores))))
    constraints = _constraints(index, search)
    strict = base.copy()
    for constraint in constraints:
        strict &= constraint.bitmap
    return Match(base, constraints, strict, scores)


def ordered_dataset_ids(session: Session, search: SearchFilter) -> np.ndarray:
    """Every dataset id a search matches, in the order its pages list them (exports stream these)."""
    index = current_index(session, catalog_version(session))
    return index.ids[_match(session, index, search).ordered_positions(index, search)]


def search_datasets(
    session: Session,
    search: SearchFilter,
    *,
    page_size: int | None = None,
    cursor: str | None = None,
    facet_size: int | None = None,
    base_path: str = "/datasets",
    api_prefix: str = "/api/v1",
    with_facets: bool = True,
) -> SearchResponse:
    started = time.perf_counter()
    settings = get_settings()
    page_size = settings.page_size_default if page_size is None else page_size
    if not 1 <= page_size <= settings.page_size_max:
        raise InvalidInput(
            ["query", "page_size"], f"page_size must be between 1 and {settings.page_size_max}"
        )
    offset = decode_cursor(cursor)
    version = catalog_version(session)
    response = _search(
        session, version, search, page_size, offset, facet_size or settings.facet_size, base_path, api_prefix,
        with_facets,
    )  # fmt: skip
    response.timing_ms = round((time.perf_counter() - started) * 1000, 2)
    return response


# -- JSON answers kept per catalog version ------------------------------------------------------------------------
# The same searches come back (the landing page, a popular facet, the next page). Their JSON is kept as bytes,
# which the garbage collector never scans: keeping the response objects themselves (a few thousand tracked
# objects each) made full collections pause a web process for most of a second.
_json_answers: VersionedCache[bytes] = VersionedCache(maxsize=5000)


def catalog_key(session: Session) -> tuple[Any, int]:
    """(database, catalog version): what every answer derived from the catalog alone depends on."""
    return session.get_bind().url, catalog_version(session)


def search_json(
    session: Session,
    search: SearchFilter,
    *,
    page_size: int | None = None,
    cursor: str | None = None,
    facet_size: int | None = None,
    base_path: str = "/datasets",
) -> bytes:
    """`search_datasets(...)` as JSON, from memory when this catalog version gave it before. `timing_ms` is
    this call's own time (the field is written last, after the kept part)."""
    started = time.perf_counter()
    key = ("search", catalog_key(session), search.model_dump_json(), page_size, cursor, facet_size, base_path)
    kept = _json_answers.get_or_compute(
        key,
        lambda: (
            search_datasets(
                session,
                search,
                page_size=page_size,
                cursor=cursor,
                facet_size=facet_size,
                base_path=base_path,
            )
            .model_dump_json(exclude={"timing_ms"})
            .encode()
        ),
    )
    return kept[:-1] + b',"timing_ms":%.2f}' % ((time.perf_counter() - started) * 1000)


_FACET_LIST = TypeAdapter(list[Facet])


def facets_json(session: Session, search: SearchFilter, *, facet_size: int | None, base_path: str) -> bytes:
    """Only the facets of a search, as JSON, kept like `search_json`."""
    key = ("facets", catalog_key(session), search.model_dump_json(), facet_size, base_path)
    return _json_answers.get_or_compute(
        key,
        lambda: _FACET_LIST.dump_json(
            search_datasets(session, search, page_size=1, facet_size=facet_size, base_path=base_path).facets
        ),
    )


def _search(
    session: Session,
    version: int,
    search: SearchFilter,
    page_size: int,
    offset: int,
    facet_size: int,
    base_path: str,
    api_prefix: str,
    with_facets: bool,
) -> SearchResponse:
    index = current_index(session, version)
    match = _match(session, index, search)
    base, constraints = match.base, match.constraints
    ordered = match.ordered_positions(index, search)
    page_ids = index.ids[ordered[offset : offset + page_size]]
    near_ids = (
        index.ids[_near_match_positions(index, search, base, constraints)] if offset == 0 else page_ids[:0]
    )
    rows = _fetch_by_id(session, np.concatenate((page_ids, near_ids)), version)  # one round trip for both
    results = [summarise(rows[i], api_prefix) for i in page_ids.tolist() if i in rows]
    near = [
        NearMatch(dataset=summarise(rows[i], api_prefix), missed=missed_reasons(rows[i], search))
        for i in near_ids.tolist()
        if i in rows
    ]
    next_offset = offset + page_size
    next_pairs = [*filter_pairs(search), ("page_size", str(page_size)), ("_next", encode_cursor(next_offset))]
    next_url = f"{base_path}{query_string(next_pairs)}" if next_offset < ordered.size else None

    facets = facet_counts(index, search, base, constraints, facet_size, base_path) if with_facets else []
    return SearchResponse(
        count=int(ordered.size),
        results=results,
        facets=facets,
        near_matches=near,
        next_url=next_url,
        filter=search,
        catalog_version=version,
        timing_ms=0.0,
    )


def _ordered_positions(
    index: CatalogIndex, bitmap: np.ndarray, search: SearchFilter, scores: Mapping[int, float]
) -> np.ndarray:
    flags = index.unpack(bitmap)
    if search.sort == Sort.relevance and scores:
        positions = np.flatnonzero(flags)
        text_score = np.array([scores.get(int(i), 0.0) for i in index.ids[positions]])
        text_score = text_score / text_score.max() if text_score.size and text_score.max() > 0 else text_score
        prior = (index.open_score if search.prefer_open else index.base_score)[positions]
        # text relevance leads; the prior (labeled, larger, newer, open if asked) orders near-equal matches
        return positions[np.lexsort((positions, -(3 * text_score + prior)))]
    key = "relevance_open" if search.sort == Sort.relevance and search.prefer_open else search.sort.value
    ordering = index.orderings[key]
    ordered = ordering[flags[ordering]]
    default_descending = search.sort != Sort.name
    if search.order is not None and (search.order == Order.desc) != default_descending:
        ordered = ordered[::-1]
    return ordered


# What a result summary and the near-match reasons read: not raw_records or the search vector, which would
# be parsed for every row of every page for nothing.
_RESULT_COLUMNS = [Dataset.id, *SUMMARY_COLUMNS, *(getattr(Dataset, spec.column) for spec in FACETS.values())]
# `= ANY(:ids)` with one array parameter: one statement text whatever the number of ids (so PostgreSQL and
# psycopg can reuse its plan) instead of an IN list rendered anew for each length.
_RESULT_SELECT = select(*dict.fromkeys(_RESULT_COLUMNS)).where(
    Dataset.id == func.any(bindparam("ids", type_=ARRAY(BigInteger)))
)


def _fetch_by_id(session: Session, ids: np.ndarray, version: int) -> dict[int, Any]:
    """Result rows (plain rows with Dataset's attribute names) by id: those of this catalog version already
    read come from memory, the rest in one query. A row deleted since the index was built is missing from the
    answer: callers skip it."""
    if ids.size == 0:
        return {}
    database = session.get_bind().url
    wanted = ids.tolist()
    cached = _result_rows.get_many([(database, version, i) for i in wanted])
    rows = {key[2]: row for key, row in cached.items()}
    missing = [i for i in wanted if i not in rows]
    if missing:
        fetched = {row.id: row for row in session.execute(_RESULT_SELECT, {"ids": missing})}
        _result_rows.put_many({(database, version, i): row for i, row in fetched.items()})
        rows.update(fetched)
    return rows


# Rows that result lists show, per catalog version: a search that is not cached itself mostly lists datasets
# that other searches listed already. Rows are immutable tuples (about 2 KB each).
_result_rows: VersionedCache[Any] = VersionedCache(maxsize=10_000)


def facet_counts(
    index: CatalogIndex,
    search: SearchFilter,
    base: np.ndarray,
    constraints: list[Constraint],
    facet_size: int,
    base_path: str,
) -> list[Facet]:
    """Disjunctive counts: each facet is counted under every selection except its own."""
    toggle = _Toggler(search, base_path)
    facets = []
    for name, spec in FACETS.items():
        within = base.copy()
        for constraint in constraints:
            if constraint.key != name:
                within &= constraint.bitmap
        bitmaps = index.facets[name]
        counts = bitmaps.counts(within) if bitmaps.values else np.zeros(0, dtype=np.int64)
        selected = search.terms.get(name, [])
        entries = [(v, int(c)) for v, c in zip(bitmaps.values, counts, strict=True) if c > 0 or v in selected]
        entries += [(v, 0) for v in selected if v not in bitmaps.position]
        entries = _order_facet(spec.order, name, entries)
        shown = entries[:facet_size]
        shown += [e for e in entries[facet_size:] if e[0] in selected]
        vocabulary = ALL.get(spec.vocabulary or "")
        facets.append(
            Facet(
                name=name,
                label=spec.label,
                truncated=len(entries) > facet_size,
                results=[
                    FacetValue(
                        value=value,
                        label=value_label(name, value),
                        count=count,
                        selected=value in selected,
                        toggle_url=toggle.url(name, value),
                        parent=vocabulary.term(value).parent
                        if vocabulary is not None and name == "anatomy" and value in vocabulary
                        else None,
                    )
                    for value, count in shown
                ],
            )
        )
    return facets


class _Toggler:
    """Toggle links for every shown facet value. A link is the filter's query string with one value added or
    removed; the encoded `key=value` parts of everything else are computed once per response, so a link costs
    one join (`urlencode` per link cost more than the counting itself). Same strings as `query_string`."""

    def __init__(self, search: SearchFilter, base_path: str) -> None:
        pairs = filter_pairs(search)
        self.base_path = base_path
        head = _encoded([p for p in pairs if p[0] == "q"])
        tail = _encoded([p for p in pairs if p[0] != "q" and p[0] not in FACETS])
        self.terms = {facet: list(values) for facet, values in search.terms.items()}
        self.parts = {name: _encoded([(name, v) for v in self.terms.get(name, [])]) for name in FACETS}
        parts = self.parts
        names = list(FACETS)
        # the encoded parts before and after each facet's own values
        self.before = {
            name: [*head, *(p for other in names[:i] for p in parts[other])] for i, name in enumerate(names)
        }
        self.after = {
            name: [*(p for other in names[i + 1 :] for p in parts[other]), *tail]
            for i, name in enumerate(names)
        }

    def url(self, facet: str, value: str) -> str:
        values, parts = self.terms.get(facet, []), self.parts[facet]
        if value in values:
            own = [part for v, part in zip(values, parts, strict=True) if v != value]
        else:
            own = [*parts, _quoted(facet) + "=" + _quoted(value)]
        return self.base_path + "?" + "&".join([*self.before[facet], *own, *self.after[facet]])


def _encoded(pairs: list[tuple[str, str]]) -> list[str]:
    """`key=value` parts exactly as `urlencode` writes them (joined by '&' they are its output)."""
    return [_quoted(key) + "=" + _quoted(value) for key, value in pairs]


@lru_cache(maxsize=4096)
def _quoted(text: str) -> str:
    """quote_plus, remembered: nearly every link part is a facet name or value, the same on every request."""
    return quote_plus(text)


def _order_facet(order: str, name: str, entries: list[tuple[str, int]]) -> list[tuple[str, int]]:
    if order == "vocabulary":
        ids = ALL[FACETS[name].vocabulary or name].ids
        return sorted(entries, key=lambda e: ids.index(e[0]) if e[0] in ids else len(ids))
    if order == "value_desc":
        return sorted(entries, key=lambda e: (e[0] == "unknown", -int(e[0]) if e[0].isdigit() else 0))
    return sorted(entries, key=lambda e: (-e[1], e[0]))


def value_label(facet: str, value: str) -> str:
    vocabulary = ALL.get(FACETS[facet].vocabulary or "")
    if vocabulary is not None and value in vocabulary:
        return vocabulary.term(value).label
    return value.capitalize() if value == "unknown" else value


def _near_match_positions(
    index: CatalogIndex, search: SearchFilter, base: np.ndarray, constraints: list[Constraint]
) -> np.ndarray:
    """Datasets that miss exactly one or two constraints, closest first (fewer misses, then the ranking
    prior, then catalog position): at most `near_matches_max` index positions."""
    if not constraints:
        return np.zeros(0, dtype=np.int64)
    misses = np.zeros(index.size, dtype=np.uint8)
    for constraint in constraints:
        misses += ~index.unpack(constraint.bitmap)
    candidates = index.unpack(base) & (misses >= 1) & (misses <= 2)
    positions = np.flatnonzero(candidates)
    score = index.open_score if search.prefer_open else index.base_score
    return closest(positions, misses, score, get_settings().near_matches_max)


def closest(positions: np.ndarray, misses: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """The first k of `positions` (ascending, each missing one or two constraints) ordered by (misses, -score,
    position): the same as `positions[np.lexsort((-score[positions], misses[positions]))][:k]`.

    A one-facet query at 1,000,000 datasets has ~700,000 candidates; sorting them all took 130-200 ms. A
    partition per miss level selects the k closest in linear time and only those are sorted (bench/README.md)."""
    chosen: list[np.ndarray] = []
    need = k
    for level in (1, 2):
        if need <= 0:
            break
        at_level = positions[misses[positions] == level]
        if at_level.size > need:
            keys = -score[at_level]
            kth = np.partition(keys, need - 1)[need - 1]
            at_level = at_level[keys <= kth]  # every tie of the k-th key; the exact sort below cuts them
        ordered = at_level[np.lexsort((at_level, -score[at_level]))][:need]
        chosen.append(ordered)
        need -= ordered.size
    return np.concatenate(chosen) if chosen else positions[:0]


def missed_reasons(row: Any, search: SearchFilter) -> list[str]:
    """Human reasons why a dataset misses a filter: 'access is registration', 'dim is 2D'."""
    reasons = []
    for facet, selected in search.terms.items():
        values = CatalogIndex.facet_values_of(facet, row)
        if not set(values) & set(selected):
            shown = ", ".join(
                value_label(facet, v) for v in values if facet != "anatomy" or v in row.anatomies
            )
            reasons.append(f"{facet} is {shown or 'unknown'}")
    for name, bounds in search.ranges.items():
        value = getattr(row, name)
        if value is None:
            reasons.append(f"{name} is unknown")
        elif (bounds.gte is not None and value < bounds.gte) or (
            bounds.lte is not None and value > bounds.lte
        ):
            reasons.append(f"{name} is {value:,}" if name == "images" else f"{name} is {value}")
    return reasons


# -- statistics -------------------------------------------------------------------------------------------------
STATISTIC_FACETS = ("modality", "dim", "task", "anatomy", "access", "year", "size", "host", "labeled")


def catalog_statistics(session: Session) -> dict:
    """Distributions over the whole catalog (charts link each bar to the filtered search) and the taxonomy.
    A new dict each call (callers may replace its keys); the values are shared and read-only."""
    version = catalog_version(session)
    key = (session.get_bind().url, version)
    return dict(_statistics.get_or_compute(key, lambda: _catalog_statistics(session, version)))


_statistics: VersionedCache[dict] = VersionedCache(maxsize=4)


def _catalog_statistics(session: Session, version: int) -> dict:
    index = current_index(session, version)
    facets = facet_counts(index, SearchFilter(), index.all, [], 10_000, "/datasets")
    distributions = {f.name: f for f in facets if f.name in STATISTIC_FACETS}
    return {
        "catalog_version": version,
        "datasets": index.size,
        "images_known": int((index.images >= 0).sum()),
        "images_total": int(index.images[index.images >= 0].sum()),
        "distributions": distributions,
        "taxonomy": taxonomy(session),
    }


def taxonomy(session: Session) -> dict:
    """The survey's taxonomy as a tree: dimension > modality > (task | organ), every node linking to its search."""
    rows = session.execute(
        text(
            "SELECT d, m, 'total' AS kind, '' AS value, count(*) AS n FROM dataset, unnest(dims) d, "
            "unnest(modalities) m GROUP BY d, m "
            "UNION ALL SELECT d, m, 'task', t, count(*) FROM dataset, unnest(dims) d, "
            "unnest(modalities) m, unnest(tasks) t GROUP BY d, m, t "
            "UNION ALL SELECT d, m, 'anatomy', a, count(*) FROM dataset, unnest(dims) d, "
            "unnest(modalities) m, unnest(anatomies) a GROUP BY d, m, a"
        )
    ).all()
    dims: dict[str, dict] = {}
    for dim, modality, kind, value, n in rows:
        dim_node = dims.setdefault(dim, _node(dim, {"dim": dim}))
        mod_node = dim_node["children"].setdefault(
            modality, _node(value_label("modality", modality), {"dim": dim, "modality": modality})
        )
        if kind == "total":
            mod_node["value"] = n
            dim_node["value"] += n
        else:
            leaf = _node(value_label(kind, value), {"dim": dim, "modality": modality, kind: value}, value=n)
            leaf["kind"] = kind
            mod_node["children"][f"{kind}:{value}"] = leaf
    root = _node("All datasets", {}, value=sum(d["value"] for d in dims.values()))
    root["children"] = dims
    return _as_lists(root)


def _node(name: str, filters: dict[str, str], value: int = 0) -> dict:
    return {
        "name": name,
        "value": value,
        "url": "/datasets" + query_string(list(filters.items())),
        "children": {},
    }


def _as_lists(node: dict) -> dict:
    children = sorted(node.pop("children").values(), key=lambda c: -c["value"])
    if children:
        node["children"] = [_as_lists(child) for child in children]
    return node
