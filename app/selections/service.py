"""Selections (the cart) and side-by-side comparison: one function per operation, called by pages and the API.

A selection is an ordered list of dataset slugs behind two unguessable ids. Its id is the owner key: anonymous
users hold it in a cookie (see pages.py), API clients get it when they create the selection and put it in the
URL; renaming, emptying, deleting and adding or removing datasets need it. Its read_id is the share link: it
reads and exports the selection, and a write through it is a 403. Every write locks the row (SELECT ... FOR
UPDATE), so two quick clicks on "Add to selection" in two tabs cannot lose one another's dataset.
"""

import importlib.util
import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from app.catalog.models import Dataset
from app.catalog.service import access_next_step, canonical_slug, canonical_slugs, summarise
from app.common.errors import InvalidInput, NotAllowed, NotFound, NotOffered, UnknownItems
from app.common.vocabularies import ALL
from app.selections.models import Selection
from app.selections.schemas import (
    COMPARE_MAX,
    COMPARE_MIN,
    CompareField,
    CompareResponse,
    CountedValue,
    SelectionDetail,
    SelectionEntry,
    SelectionTotals,
)
from app.sources.service import fetch_overview_of

MAX_DATASETS = 1_000
ID_LENGTH = 32  # secrets.token_urlsafe(24) is 32 characters, the width of selection.id

# The columns a summary, an access step or an export reads; the raw survey rows and the search text stay behind.
LIGHT_COLUMNS = (
    defer(Dataset.raw_records),
    defer(Dataset.search_document),
    defer(Dataset.search_vector),
    defer(Dataset.source_facts),
)


# -- reading and checking slugs ---------------------------------------------------------------------------------
def clean_slugs(slugs: Iterable[str]) -> list[str]:
    """Slugs without surrounding blanks, empties or repeats, in first-seen order."""
    return list(dict.fromkeys(s.strip() for s in slugs if s and s.strip()))


def current_slugs(session: Session, slugs: Sequence[str]) -> list[str]:
    """`slugs` as the catalog names those datasets now: a slug merged into another dataset becomes that
    dataset's slug (once, where it first appears); a slug the catalog never had stays as it is."""
    now = canonical_slugs(session, slugs)
    return list(dict.fromkeys(now.get(s, s) for s in slugs))


def datasets_by_slug(session: Session, slugs: Sequence[str]) -> list[Dataset]:
    """The datasets of `slugs` in that order, read as `current_slugs` reads them (so old links keep working),
    each once; slugs the catalog does not have are left out. One query when every slug names a dataset now
    (the usual case, on every selection page); the redirects are looked up only for the others."""
    if not slugs:
        return []
    by_slug = _light_rows(session, slugs)
    missing = [s for s in slugs if s not in by_slug]
    if missing:
        moved = canonical_slugs(session, missing)
        by_slug |= _light_rows(session, [s for s in moved.values() if s not in by_slug])
        slugs = [moved.get(s, s) for s in slugs]
    return [by_slug[s] for s in dict.fromkeys(slugs) if s in by_slug]


def _light_rows(session: Session, slugs: Sequence[str]) -> dict[str, Dataset]:
    if not slugs:
        return {}
    rows = session.execute(select(Dataset).options(*LIGHT_COLUMNS).where(Dataset.slug.in_(list(slugs))))
    return {row.slug: row for row in rows.scalars()}


def unknown_slugs_error(unknown: list[str], given: Sequence[str], loc: list[str | int]) -> UnknownItems:
    """A 422 naming each unknown slug, pointing at its position in what the client sent."""
    positions = {s.strip(): i for i, s in reversed(list(enumerate(given)))}
    shown = ", ".join(repr(s) for s in unknown[:10]) + (
        f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
    )
    noun = "slugs" if len(unknown) > 1 else "slug"
    return UnknownItems(
        f"unknown dataset {noun}: {shown}",
        [{"loc": [*loc, positions.get(s, 0)], "msg": f"unknown dataset slug {s!r}"} for s in unknown[:100]],
    )


def checked_slugs(session: Session, slugs: Sequence[str], loc: list[str | int]) -> list[str]:
    """`slugs` cleaned, within the size cap, every one a dataset of the catalog; else a 422 that says which."""
    cleaned = clean_slugs(slugs)
    if len(cleaned) > MAX_DATASETS:
        raise InvalidInput(
            loc, f"a selection holds at most {MAX_DATASETS:,} datasets; this one would hold {len(cleaned):,}"
        )
    now = canonical_slugs(session, cleaned)
    unknown = [s for s in cleaned if s not in now]
    if unknown:
        raise unknown_slugs_error(unknown, slugs, loc)
    return list(dict.fromkeys(now[s] for s in cleaned))  # a merged dataset's old slug stores its current one


def _clean_name(name: str | None) -> str | None:
    return (name or "").strip()[:200] or None


def plan_slugs(session: Session, plan_id: str) -> list[str]:
    """The final dataset list of a saved MDFP plan (the planner owns plans; NotFound for an unknown id)."""
    if importlib.util.find_spec("app.mdfp.service") is None:
        raise NotOffered("plans are not available on this server yet")
    from app.mdfp.service import plan_dataset_slugs

    return list(plan_dataset_slugs(session, plan_id))


# -- the cart ---------------------------------------------------------------------------------------------------
def get_selection(session: Session, selection_id: str, *, for_update: bool = False) -> Selection:
    """The selection whose owner key is `selection_id`: what every write starts from. Its read-only share id
    is a 403 (the link reads, never changes); anything else a 404."""
    selection = None
    if 0 < len(selection_id) <= ID_LENGTH:
        selection = session.get(Selection, selection_id, with_for_update=for_update or None)
    if selection is None:
        if _by_read_id(session, selection_id) is not None:
            raise NotAllowed(
                "this is the selection's read-only link: changing it needs its owner key (the id it was created with)"
            )
        raise NotFound(f"selection {selection_id!r}")
    if for_update:
        # a write starts from the datasets as the catalog names them now (old slugs of merged datasets)
        now = current_slugs(session, selection.dataset_slugs)
        if now != selection.dataset_slugs:
            selection.dataset_slugs = now
    return selection


def readable_selection(session: Session, selection_id: str) -> tuple[Selection, bool]:
    """The selection `selection_id` names, by its owner key or by its read-only share id, and whether it was the
    owner key. 404 for neither."""
    selection = session.get(Selection, selection_id) if 0 < len(selection_id) <= ID_LENGTH else None
    if selection is not None:
        return selection, True
    selection = _by_read_id(session, selection_id)
    if selection is None:
        raise NotFound(f"selection {selection_id!r}")
    return selection, False


def _by_read_id(session: Session, read_id: str) -> Selection | None:
    if not 0 < len(read_id) <= ID_LENGTH:
        return None
    return session.scalars(select(Selection).where(Selection.read_id == read_id)).one_or_none()


def find_selection_slugs(session: Session, selection_id: str | None) -> list[str] | None:
    """The slugs of a selection, or None when there is no such selection (pages ask this on every render)."""
    if not selection_id or len(selection_id) > ID_LENGTH:
        return None
    return session.execute(
        select(Selection.dataset_slugs).where(Selection.id == selection_id)
    ).scalar_one_or_none()


def create_selection(
    session: Session,
    *,
    name: str | None = None,
    dataset_slugs: Sequence[str] | None = None,
    plan_id: str | None = None,
) -> Selection:
    if plan_id is not None:
        slugs = checked_slugs(session, plan_slugs(session, plan_id), ["body", "plan_id"])
    else:
        slugs = checked_slugs(session, dataset_slugs or [], ["body", "dataset_slugs"])
    selection = Selection(
        id=secrets.token_urlsafe(24),
        read_id=secrets.token_urlsafe(24),
        name=_clean_name(name),
        dataset_slugs=slugs,
    )
    session.add(selection)
    session.commit()
    session.refresh(selection)
    return selection


def replace_selection(
    session: Session, selection_id: str, *, name: str | None, dataset_slugs: Sequence[str]
) -> Selection:
    selection = get_selection(session, selection_id, for_update=True)
    selection.dataset_slugs = checked_slugs(session, dataset_slugs, ["body", "dataset_slugs"])
    selection.name = _clean_name(name)
    return _saved(session, selection)


def rename_selection(session: Session, selection_id: str, name: str | None) -> Selection:
    selection = get_selection(session, selection_id, for_update=True)
    selection.name = _clean_name(name)
    return _saved(session, selection)


def add_dataset(
    session: Session, selection_id: str, slug: str, loc: list[str | int] | None = None
) -> Selection:
    """Add one dataset at the end; adding one that is already there changes nothing."""
    selection = get_selection(session, selection_id, for_update=True)
    given = slug.strip()
    current = canonical_slug(session, given)  # a merged dataset's old slug adds the dataset it became
    if current is None:
        raise InvalidInput(loc or ["body", "slug"], f"unknown dataset slug {given!r}")
    slug = current
    if slug in selection.dataset_slugs:
        session.rollback()  # release the row lock
        return selection
    loc = loc or ["body", "slug"]
    if len(selection.dataset_slugs) >= MAX_DATASETS:
        raise InvalidInput(loc, f"the selection is full: it holds at most {MAX_DATASETS:,} datasets")
    selection.dataset_slugs = [*selection.dataset_slugs, slug]  # a new list: SQLAlchemy sees the change
    return _saved(session, selection)


def add_datasets(
    session: Session, selection_id: str, slugs: Sequence[str], loc: list[str | int]
) -> Selection:
    """Append several datasets (those not there yet), within the size cap."""
    selection = get_selection(session, selection_id, for_update=True)
    added = checked_slugs(
        session, slugs, loc
    )  # a slug kept from before that the catalog lost is no error here
    combined = list(dict.fromkeys([*selection.dataset_slugs, *added]))
    if len(combined) > MAX_DATASETS:
        raise InvalidInput(
            loc, f"a selection holds at most {MAX_DATASETS:,} datasets; this one would hold {len(combined):,}"
        )
    selection.dataset_slugs = combined
    return _saved(session, selection)


def remove_dataset(session: Session, selection_id: str, slug: str, *, missing_ok: bool = False) -> Selection:
    selection = get_selection(session, selection_id, for_update=True)
    if slug not in selection.dataset_slugs:
        if not missing_ok:
            raise NotFound(f"dataset {slug!r} in selection {selection_id!r}")
        session.rollback()
        return selection
    selection.dataset_slugs = [s for s in selection.dataset_slugs if s != slug]
    return _saved(session, selection)


def clear_selection(session: Session, selection_id: str) -> Selection:
    selection = get_selection(session, selection_id, for_update=True)
    selection.dataset_slugs = []
    return _saved(session, selection)


def delete_selection(session: Session, selection_id: str) -> None:
    session.delete(get_selection(session, selection_id, for_update=True))
    session.commit()


def _saved(session: Session, selection: Selection) -> Selection:
    session.commit()
    session.refresh(selection)  # updated_at is set by the database
    return selection


# -- what a selection holds -------------------------------------------------------------------------------------
def selection_detail(session: Session, selection: Selection, *, owner: bool = True) -> SelectionDetail:
    """The selection with its datasets, totals, the step each dataset needs before download, and links. Read
    through its share link (`owner` false) it shows only the share id: the owner key is never handed out."""
    slugs = current_slugs(session, selection.dataset_slugs)
    rows = datasets_by_slug(session, slugs)
    found = {row.slug for row in rows}
    return SelectionDetail(
        id=selection.id if owner else selection.read_id,
        read_id=selection.read_id,
        owner=owner,
        name=selection.name,
        dataset_slugs=slugs,
        missing_slugs=[s for s in slugs if s not in found],
        totals=selection_totals(rows),
        fetch=fetch_overview_of(session, [row.slug for row in rows]),
        datasets=[
            SelectionEntry(**summarise(row).model_dump(), access_next_step=access_next_step(row))
            for row in rows
        ],
        created_at=selection.created_at,
        updated_at=selection.updated_at,
    )


def selection_totals(rows: Sequence[Dataset]) -> SelectionTotals:
    known = [row.images for row in rows if row.images is not None]
    return SelectionTotals(
        datasets=len(rows),
        images_known=sum(known),
        images_unknown=len(rows) - len(known),
        modalities=_counted("modality", Counter(m for row in rows for m in row.modalities)),
        licences=_counted("licence", Counter(row.licence or "unknown" for row in rows)),
        access=_counted("access", Counter(row.access for row in rows), by_vocabulary=True),
    )


def _counted(kind: str, counts: Counter[str], by_vocabulary: bool = False) -> list[CountedValue]:
    vocabulary = ALL[kind]
    ids = vocabulary.ids

    def label(value: str) -> str:
        return vocabulary.term(value).label if value in ids else value

    if by_vocabulary:
        order = sorted(counts, key=lambda v: ids.index(v) if v in ids else len(ids))
    else:  # most common first; 'unknown' last whatever its count
        order = sorted(counts, key=lambda v: (v == "unknown", -counts[v], label(v).lower()))
    return [CountedValue(value=v, label=label(v), count=counts[v]) for v in order]


# -- comparison -------------------------------------------------------------------------------------------------
# (field, label, vocabulary its values come from)
COMPARE_FIELDS: tuple[tuple[str, str, str | None], ...] = (
    ("modalities", "Modality", "modality"),
    ("dims", "Dimensionality", "dim"),
    ("anatomies", "Anatomy", "anatomy"),
    ("tasks", "Task", "task"),
    ("diseases", "Diseases", None),
    ("images", "Images or cases", None),
    ("labeled", "Labels", "labeled"),
    ("access", "Access", "access"),
    ("licence", "Licence", "licence"),
    ("host", "Host", "host"),
    ("year", "Year", None),
    ("quality_flags", "Quality flags", "quality"),
)


def compare_datasets(session: Session, slugs: Sequence[str]) -> CompareResponse:
    """2 to 6 datasets side by side; each field says whether their values differ (order within lists aside)."""
    wanted = clean_slugs(slugs)
    if not COMPARE_MIN <= len(wanted) <= COMPARE_MAX:
        raise InvalidInput(
            ["query", "d"],
            f"compare needs {COMPARE_MIN} to {COMPARE_MAX} different datasets (repeat d=slug); got {len(wanted)}",
        )
    rows = datasets_by_slug(session, wanted)
    if len(rows) < len(wanted):
        found = {row.slug for row in rows}
        raise unknown_slugs_error([s for s in wanted if s not in found], slugs, ["query", "d"])
    fields = []
    for name, label, vocabulary in COMPARE_FIELDS:
        values = [_plain(getattr(row, name)) for row in rows]
        fields.append(
            CompareField(
                name=name,
                label=label,
                vocabulary=vocabulary,
                values=values,
                differs=len({_comparable(v) for v in values}) > 1,
            )
        )
    return CompareResponse(
        count=len(rows),
        datasets=[summarise(row) for row in rows],
        fields=fields,
    )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


def _comparable(value: Any) -> Any:
    return tuple(sorted(value)) if isinstance(value, list) else value
