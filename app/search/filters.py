"""Search filters in and out: a filter read from a query string or a JSON body (facet values resolved through
their vocabularies, ranges and controls checked, or a 422), its query-string form with the links derived from
it (one facet value toggled, a range removed), and the opaque `_next` cursors of paged results."""

import base64
import binascii
import json
from collections.abc import Iterable
from typing import TypeVar
from urllib.parse import urlencode

from app.common.errors import InvalidInput
from app.common.vocabularies import ALL, host_in
from app.search.schemas import FACETS, RANGE_FIELDS, Order, Range, SearchFilter, Sort

# Query-string parameters that are not filter terms or ranges: the text query, ordering, paging
CONTROL_PARAMS = {"q", "sort", "order", "prefer_open", "page_size", "_next", "_facet_size"}


# Words of the survey's columns that are no value of the facet, with what to do instead
_SURVEY_MARKS = {
    ("modality", "multi"): (
        " (the survey's mark for a dataset listed in several modality tables, read per dataset from its rows:"
        " give the modalities you want, e.g. modality=CT&modality=MR, which matches any of them)"
    ),
}


# -- reading a filter from a query string or a JSON body -------------------------------------------------------
def resolve_value(facet: str, value: str) -> str:
    """The canonical facet value for any accepted spelling, or a 422 that lists the allowed values. An
    ambiguous abbreviation is a 422 here too (it has no single value): `resolve_values` accepts it."""
    values, _note = resolve_values(facet, value)
    if len(values) != 1:
        raise InvalidInput(["query", facet], _note or f"{facet} {value!r} has more than one meaning")
    return values[0]


def resolve_values(facet: str, value: str) -> tuple[list[str], str | None]:
    """The facet values a typed value stands for, and a note when it was read as more than one.

    Values are read as people type them: any spelling or synonym of a term, the survey's abbreviations
    ('seg', 'cls'), and for `host` a hostname or URL ('zenodo.org', 'www.kaggle.com',
    'https://zenodo.org/records/1'). An ambiguous abbreviation ('reg': registration or regression) answers
    with every meaning and a note that says so. Anything else is a 422 that lists the allowed values."""
    spec = FACETS[facet]
    cleaned = value.strip()
    if facet == "year":
        if cleaned.isdigit() or cleaned.lower() == "unknown":
            return [cleaned.lower()], None
        raise InvalidInput(["query", facet], f"year must be a number or 'unknown', not {value!r}")
    vocabulary = ALL[spec.vocabulary or facet]
    meanings = vocabulary.meanings(cleaned)
    if not meanings and "(" in cleaned:  # the survey's 'Histopathology (WSI)': the term before the detail
        meanings = vocabulary.meanings(cleaned.split("(", 1)[0])
    if not meanings and vocabulary.kind == "host" and (host := host_in(cleaned)) is not None:
        meanings = [host]
    if not meanings:
        allowed = ", ".join(vocabulary.ids)
        why = _SURVEY_MARKS.get((facet, cleaned.lower()), "")
        raise InvalidInput(["query", facet], f"unknown {facet} {value!r}{why}; allowed values: {allowed}")
    if len(meanings) == 1:
        return meanings, None
    labels = " or ".join(f"{vocabulary.term(m).label} ({m})" for m in meanings)
    return (
        meanings,
        f"{facet} {cleaned.lower()!r} is ambiguous: it stands for {labels}; showing datasets of each",
    )


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
    notes: list[str] = []
    ranges: dict[str, dict[str, int]] = {}
    fields: dict[str, str] = {}
    for key, value in params:
        if key in FACETS:
            if value.strip():
                resolved, note = resolve_values(key, value)
                terms.setdefault(key, []).extend(v for v in resolved if v not in terms[key])
                if note and note not in notes:
                    notes.append(note)
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
        notes=notes,
    )


_Choice = TypeVar("_Choice", Sort, Order)


def _enum(kind: type[_Choice], name: str, value: str) -> _Choice:
    try:
        return kind(value.strip().lower())
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise InvalidInput(["query", name], f"unknown {name} {value!r}; allowed: {allowed}") from None


def normalise_filter(search: SearchFilter) -> SearchFilter:
    """A filter that arrived as JSON gets the same synonym resolution and checks as a query string."""
    terms: dict[str, list[str]] = {}
    notes: list[str] = []
    for facet, values in search.terms.items():
        if facet not in FACETS:
            raise InvalidInput(
                ["body", "terms", facet], f"unknown facet {facet!r}; allowed: {', '.join(FACETS)}"
            )
        resolved: list[str] = []
        for value in values:
            meanings, note = resolve_values(facet, value)
            resolved.extend(meanings)
            if note and note not in notes:
                notes.append(note)
        terms[facet] = list(dict.fromkeys(resolved))
    for name, bounds in search.ranges.items():
        if name not in RANGE_FIELDS:
            raise InvalidInput(["body", "ranges", name], f"unknown range {name!r}; allowed: year, images")
        if bounds.gte is not None and bounds.lte is not None and bounds.gte > bounds.lte:
            raise InvalidInput(["body", "ranges", name], f"{name}: gte is larger than lte")
    return search.model_copy(update={"terms": terms, "notes": notes})


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
