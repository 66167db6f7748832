"""Which survey rows are one real dataset: explainable rules plus a hand-checked file. No database.

The survey lists one dataset several times: once per table section, once per sub-task, with a slightly
different disease text, under a second name at the same landing page, or at an old and a new landing page.
Rows are joined when one of these rules holds (each join records its rule and the names it joined):

- `same_name`: the same name once case, spacing, punctuation and the survey's '(Duplicate)' mark are ignored
  ('PAIP 2023' and 'PAIP2023');
- `same_page_and_facts`: the same landing page (scheme, 'www.' and a trailing slash ignored) stating the same
  year, the same non-zero count, the same anatomy and the same modalities (the five 'MRL Eye ... cls' tasks);
- `alias`: one name's acronym or outer part is the other's name ('National Lung Screening Trial (NLST)' and
  'NLST'; 'PanNuke (Seg)' and 'PanNuke');
- `curated`: a hand-checked join from `app/data/catalog/merges.json`.

The same file lists pairs the rules would join wrongly (`keep_apart`); a join between them is never made, and a
cluster that still holds both (joined through a third record) fails the import, so the file must say more.
"""

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from app.catalog.evidence import compact_name
from app.catalog.normalise import Normalised, aliases_of, clean_text, clean_url
from app.common.vocabularies import MODALITY, TASK

MERGES_FILE = Path(__file__).resolve().parents[1] / "data" / "catalog" / "merges.json"

RULES = {
    "same_name": "same name",
    "same_page_and_facts": "same landing page, year, count, anatomy and modalities",
    "alias": "one name is the other's acronym or short name",
    "curated": "hand-checked",
}


class MergeFileError(ValueError):
    """The curated merge file is malformed or contradicts itself; the message says where."""


@dataclass
class Join:
    rule: str
    names: tuple[str, str]
    detail: str = ""
    rows: tuple[int, int] = (0, 0)  # the indexes of the two rows it joined

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "names": list(self.names), "detail": self.detail or RULES[self.rule]}


@dataclass
class Cluster:
    """Indexes of the rows of one real dataset, the joins that made it, and a curated name if any."""

    rows: list[int]
    joins: list[Join] = field(default_factory=list)
    name: str | None = None


def landing_page(url: str | None) -> str:
    """A URL as a key: no scheme, no 'www.', no trailing slash, lower case."""
    return re.sub(r"^https?://(www\.)?", "", clean_url(url).lower()).rstrip("/")


@cache
def curated() -> dict[str, Any]:
    """The hand-checked file: {"merge": [{"names": [...], "name": optional, "reason": ...}],
    "keep_apart": [{"names": [a, b], "reason": ...}]}, names compared as compact names."""
    data: dict[str, Any] = json.loads(MERGES_FILE.read_text(encoding="utf-8"))
    for kind in ("merge", "keep_apart"):
        for index, entry in enumerate(data.get(kind, [])):
            if len(entry.get("names", [])) < 2 or not entry.get("reason"):
                raise MergeFileError(f"{MERGES_FILE}: {kind}[{index}] needs two or more names and a reason")
    return data


class _Union:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> bool:
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return False
        self.parent[max(root_a, root_b)] = min(root_a, root_b)
        return True


def _is_generic(alias: str) -> bool:
    """An acronym in parentheses that names a task or a modality ('Seg', 'CT') says nothing of identity."""
    return (
        len(compact_name(alias)) < 3 or TASK.resolve(alias) is not None or MODALITY.resolve(alias) is not None
    )


def cluster_rows(rows: list[dict[str, Any]], facts: list[Normalised]) -> list[Cluster]:
    """Rows grouped into real datasets, in the order of each cluster's first row."""
    names = [compact_name(clean_text(r["name"])) for r in rows]
    data = curated()
    apart = {frozenset(compact_name(n) for n in e["names"]) for e in data.get("keep_apart", [])}
    union = _Union(len(rows))
    joins: list[tuple[int, int, Join]] = []

    def link(a: int, b: int, rule: str, detail: str = "") -> None:
        if names[a] != names[b] and frozenset((names[a], names[b])) in apart:
            return
        if union.join(a, b):
            display = (clean_text(rows[a]["name"]), clean_text(rows[b]["name"]))
            joins.append((a, b, Join(rule, display, detail, (a, b))))

    first_of: dict[str, int] = {}
    for index, name in enumerate(names):
        first_of.setdefault(name, index)
    for index, name in enumerate(names):
        link(first_of[name], index, "same_name")

    by_facts: dict[tuple[Any, ...], int] = {}
    for index, (row, fact) in enumerate(zip(rows, facts, strict=True)):
        page = landing_page(row.get("url"))
        if not page or not fact.images or fact.year is None or not fact.modalities:
            continue
        key = (page, fact.year, fact.images, frozenset(fact.anatomies), frozenset(fact.modalities))
        link(by_facts.setdefault(key, index), index, "same_page_and_facts")

    for index, row in enumerate(rows):
        for alias in aliases_of(clean_text(row["name"])):
            other = first_of.get(compact_name(alias))
            if other is not None and not _is_generic(alias):
                link(other, index, "alias", f"{alias!r} names the other")

    curated_names: dict[int, str] = {}
    for entry in data.get("merge", []):
        members = [first_of[compact_name(n)] for n in entry["names"] if compact_name(n) in first_of]
        if len(members) < 2:  # another catalog file (or a shorter one) need not hold every curated name
            continue
        for other in members[1:]:
            link(members[0], other, "curated", entry["reason"])
        if entry.get("name"):
            curated_names[members[0]] = entry["name"]

    groups: dict[int, Cluster] = {}
    for index in range(len(rows)):
        groups.setdefault(union.find(index), Cluster(rows=[])).rows.append(index)
    for a, _b, join in joins:
        groups[union.find(a)].joins.append(join)
    for index, name in curated_names.items():
        groups[union.find(index)].name = name
    for cluster in groups.values():
        held = {names[i] for i in cluster.rows}
        for pair in apart:
            if pair <= held:
                raise MergeFileError(
                    f"{MERGES_FILE}: {sorted(pair)} are kept apart but joined through other records; "
                    "keep the linking records apart too"
                )
    return sorted(groups.values(), key=lambda c: c.rows[0])


def cluster_name(rows: list[dict[str, Any]], cluster: Cluster) -> str:
    """The merged dataset's name: the curated one; else the name most of its rows carry when they share
    one; else the words all its names begin with ('BCNB Task-1'... -> 'BCNB'); else the most frequent."""
    if cluster.name:
        return cluster.name
    names = [clean_text(rows[i]["name"]) for i in cluster.rows]
    by_key = Counter(compact_name(n) for n in names)
    if len(by_key) == 1:
        counts = Counter(n for n in names if "(duplicate)" not in n.lower())
        return min(counts or Counter(names), key=lambda n: (-counts[n], len(n), n))
    prefix = _common_words(names)
    if len(compact_name(prefix)) >= 3:
        return prefix
    return min(names, key=lambda n: (-by_key[compact_name(n)], len(n), n))


_TRAILING = re.compile(r"[\s\-_(,:]+$|\s+(task|subset)[\s\-_]*$", re.I)


def _common_words(names: list[str]) -> str:
    """The longest run of whole words every name starts with, without a dangling 'Task' or separator."""
    words = [re.findall(r"[^\s\-_(]+|[\s\-_(]+", n) for n in names]
    common: list[str] = []
    for parts in zip(*words, strict=False):
        if len({p.lower() for p in parts}) != 1:
            break
        common.append(parts[0])
    prefix = "".join(common)
    while True:
        trimmed = _TRAILING.sub("", prefix)
        if trimmed == prefix:
            return prefix.strip()
        prefix = trimmed


def keys_by_row(rows: list[dict[str, Any]]) -> list[str]:
    """Row fingerprints (the first 12 hex digits of the SHA-1 of the row as JSON with sorted keys)."""
    import hashlib

    return [
        hashlib.sha1(json.dumps(r, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]
        for r in rows
    ]


def group_rows_by(values: list[str]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = defaultdict(list)
    for index, value in enumerate(values):
        grouped[value].append(index)
    return dict(grouped)
