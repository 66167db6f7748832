"""2D class names by meaning: "Axial" and "axial" are one class, as are "Tumors" and "tumour" or "NORMAL" and
"healthy". Names go through the structures vocabulary (app/common/structures.py); a name it does not know is
kept as written, unless the set spells it several ways (case, separators: "No Finding", "no_finding" ->
"no_finding"), and a plural that appears beside its singular in one set ("widgets" beside "widget") is that
class. Nothing else is merged."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace

from app.common.labels import resolve_concept
from workers.imaging.cases import Case


def canonical_classes(names: Iterable[str]) -> dict[str, str]:
    """Each name -> its class: the vocabulary's concept id; for a name it does not know, the name as written,
    or its slug when the set spells it several ways ("No Finding", "no finding"); a plural beside its singular
    in the set is the singular's class."""
    # class ids ("0", "1", or "pathmnist/0" before a table names them) are no names: they stay as they are
    names = list(names)
    unique = {name for name in names if not re.fullmatch(r"(?:[^/]+/)?\d+", name)}
    resolved = {name: resolve_concept(name) for name in unique}
    spellings: dict[str, set[str]] = defaultdict(set)
    for name, (concept, known) in resolved.items():
        if not known:
            spellings[concept].add(name)
    canonical = {
        name: concept if known or len(spellings[concept]) > 1 else name
        for name, (concept, known) in resolved.items()
    }
    by_slug = {concept: canonical[name] for name, (concept, _known) in resolved.items()}
    for name, (concept, known) in resolved.items():
        for ending in ("es", "s"):
            singular = concept[: -len(ending)]
            if not known and concept.endswith(ending) and singular in by_slug:
                canonical[name] = by_slug[singular]
                break
    return canonical | {name: name for name in names if name not in canonical}


def with_canonical_classes(cases: list[Case]) -> list[Case]:
    """The cases with their class names (`class_name`, `class_names`) made canonical across the set."""
    names = [c.class_name for c in cases if c.class_name] + [n for c in cases for n in c.class_names or ()]
    if not names:
        return cases
    canonical = canonical_classes(names)
    return [
        replace(
            case,
            class_name=canonical[case.class_name] if case.class_name else case.class_name,
            class_names=tuple(dict.fromkeys(canonical[n] for n in case.class_names))
            if case.class_names is not None
            else None,
        )
        for case in cases
    ]
