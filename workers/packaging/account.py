"""The bundle's complete account: every item left out or changed, at whichever stage, in one table.

A job drops items in many places: a source that cannot be fetched or unpacked, files no case of the detected
layout uses, a case id that repeats, a file that cannot be read (truncated, a localizer, a series with gaps),
a label refused while harmonising, a duplicate of content already kept, a case packaging refuses. Each stage
hands its losses to packaging as `SkippedItem`s with their stage, and harmonising's changes as `AlteredItem`s;
this module turns them into the one account that report.json, report.html, `account.csv` (beside the
manifest), the datacard and the API all count from, so their numbers cannot disagree.

Rows are sorted (source, stage in pipeline order, file, item id, outcome, kind, reason) and carry no time, so
the same losses give the same bytes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.common.jobs import SLICE_AXES, ItemStage
from workers.packaging.cases import AlteredItem, SkippedItem
from workers.packaging.manifest import write_csv

ACCOUNT_CSV = "account.csv"
ACCOUNT_COLUMNS = ["source", "item_id", "file", "stage", "outcome", "kind", "reason"]
WHOLE_SOURCE = "(whole source)"  # the file named for a source that could not be fetched or unpacked
STAGE_ORDER = {stage.value: position for position, stage in enumerate(ItemStage)}
SKIPPED, ALTERED, NOTED = "skipped", "altered", "noted"
# slices of a case that `skip_empty_slices` left out of its 2D slices: one note per case with the count
EMPTY_SLICES = "empty_slices"
# AlteredItem kinds that are notes rather than changes to the voxels or labels
NOTE_KINDS = frozenset({"modality", EMPTY_SLICES})
_EMPTY_SLICES_NOTE = re.compile(r"^(?P<left_out>\d+) of (?P<total>\d+) ")
AXIS_PLANES = {axis: plane for plane, axis in SLICE_AXES.items()}


def empty_slices_note(left_out: int, total: int, axis: int) -> str:
    """The account's reason for a case's left-out empty slices; it starts with the count, which
    `account_counts` adds up (so the total is read from the rows every other place shows)."""
    return (
        f"{left_out} of {total} {AXIS_PLANES.get(axis, f'axis-{axis}')} slices left out: no labelled voxel "
        "(option skip_empty_slices)"
    )


def _row(
    source: str, item_id: str, file: str, stage: str, outcome: str, kind: str, reason: str
) -> dict[str, str]:
    return {
        "source": source,
        "item_id": item_id,
        "file": file,
        "stage": stage,
        "outcome": outcome,
        "kind": kind,
        "reason": reason,
    }


def _order(row: dict[str, str]) -> tuple[Any, ...]:
    return (
        row["source"],
        STAGE_ORDER.get(row["stage"], len(STAGE_ORDER)),
        row["file"],
        row["item_id"],
        row["outcome"],
        row["kind"],
        row["reason"],
    )


def account_rows(skipped: Sequence[SkippedItem], altered: Sequence[AlteredItem]) -> list[dict[str, str]]:
    """Every loss and change as one row each, in a fixed order (see the module's docstring)."""
    rows = [_row(s.source, s.item_id, s.item, s.stage, SKIPPED, "", s.reason) for s in skipped]
    rows += [
        _row(
            a.source, a.item_id, a.item, a.stage, NOTED if a.kind in NOTE_KINDS else ALTERED, a.kind, a.detail
        )
        for a in altered
    ]
    return sorted(rows, key=_order)


def is_whole_source(row: dict[str, str]) -> bool:
    return row["outcome"] == SKIPPED and row["file"] == WHOLE_SOURCE


def account_counts(rows: Sequence[dict[str, str]]) -> dict[str, Any]:
    """The numbers every other place repeats: items skipped (a source that never arrived is counted apart, as
    `sources_not_fetched`), skipped per stage, items altered and the alterations per kind, notes, and the
    slices `skip_empty_slices` left out (summed over the cases' notes)."""
    skipped = [r for r in rows if r["outcome"] == SKIPPED and not is_whole_source(r)]
    altered = [r for r in rows if r["outcome"] == ALTERED]
    by_stage = Counter(r["stage"] for r in skipped)
    return {
        "skipped": len(skipped),
        "skipped_by_stage": {
            stage.value: by_stage[stage.value] for stage in ItemStage if by_stage[stage.value]
        },
        "sources_not_fetched": sum(1 for r in rows if is_whole_source(r)),
        "altered": len({(r["source"], r["item_id"] or r["file"]) for r in altered}),
        "alterations_by_kind": dict(sorted(Counter(r["kind"] for r in altered).items())),
        "noted": sum(1 for r in rows if r["outcome"] == NOTED),
        "empty_slices_left_out": sum(
            int(match["left_out"])
            for r in rows
            if r["kind"] == EMPTY_SLICES and (match := _EMPTY_SLICES_NOTE.match(r["reason"]))
        ),
    }


def per_source_skipped(rows: Sequence[dict[str, str]]) -> Counter[str]:
    """Items skipped per source (whole-source rows not counted: the source's status says it)."""
    return Counter(r["source"] for r in rows if r["outcome"] == SKIPPED and not is_whole_source(r))


def write_account(rows: Sequence[dict[str, str]], root: Path) -> None:
    write_csv([dict(r) for r in rows], ACCOUNT_COLUMNS, root / ACCOUNT_CSV)
