"""JSON routes of selections, comparison and exports: thin wrappers around service.py and exports.py."""

from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from app.api.deps import SearchFilterDep, SessionDep
from app.core.db import new_session
from app.core.urls import urls
from app.search.service import ordered_dataset_ids
from app.selections import exports, service
from app.selections.schemas import (
    CompareResponse,
    ExportFormat,
    SelectionAdd,
    SelectionCreate,
    SelectionDetail,
    SelectionReplace,
)

router = APIRouter()
exports_router = APIRouter()  # the export routes of searches, selections and plans

SelectionId = Annotated[
    str,
    Path(
        description="The selection's owner key (its `id` when it was created), or for reading only its "
        "`read_id` (the share link)",
        max_length=64,
    ),
]
OwnerKey = Annotated[
    str, Path(description="The selection's owner key: the `id` returned when it was created", max_length=64)
]
# writes through the read-only share id
OWNER_ONLY: dict[int | str, dict[str, Any]] = {
    403: {"description": "The id is the read-only share id: changes need the owner key"},
    404: {"description": "No selection has this id"},
}
FormatSuffix = Annotated[ExportFormat, Path(description="csv, json, bib, jsonld or manifest.json")]

EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The export, streamed, with a Content-Disposition file name",
        "content": {fmt.media_type.split(";")[0]: {} for fmt in ExportFormat},
    }
}


# -- the cart ---------------------------------------------------------------------------------------------------
@router.post(
    "/selections",
    operation_id="create_selection",
    response_model=SelectionDetail,
    status_code=status.HTTP_201_CREATED,
)
def create_selection(
    session: SessionDep,
    response: Response,
    body: Annotated[
        SelectionCreate | None,
        Body(
            openapi_examples={
                "empty": {"summary": "An empty selection", "value": {}},
                "datasets": {
                    "summary": "Named, with datasets",
                    "value": {"name": "Liver CT", "dataset_slugs": ["lits", "chaos"]},
                },
                "plan": {"summary": "Seeded from a saved MDFP plan", "value": {"plan_id": "Jx3k..."}},
            }
        ),
    ] = None,
) -> SelectionDetail:
    """Create a selection (a cart of datasets): empty, from slugs, or from a saved plan's final dataset list.

    The answer's `id` is the owner key: keep it private, it is the only way to change or delete the selection
    (put it in the URL of those calls). Share `share_url` (its `read_id`) instead: it reads and exports the
    selection, and nothing more. Unknown slugs are a 422 that names them; a selection holds at most 1,000
    datasets."""
    body = body or SelectionCreate()
    selection = service.create_selection(
        session, name=body.name, dataset_slugs=body.dataset_slugs, plan_id=body.plan_id
    )
    response.headers["Location"] = urls.selection(selection.id)
    return service.selection_detail(session, selection)


@router.get(
    "/selections/{selection_id}",
    operation_id="get_selection",
    response_model=SelectionDetail,
)
def get_selection(session: SessionDep, selection_id: SelectionId) -> SelectionDetail:
    """A selection: its datasets in order, totals (images, modalities, licences, access) and what each dataset
    needs before it can be downloaded. Read with the share id, it shows that id only (`owner` false)."""
    selection, owner = service.readable_selection(session, selection_id)
    return service.selection_detail(session, selection, owner=owner)


@router.put(
    "/selections/{selection_id}",
    operation_id="replace_selection",
    response_model=SelectionDetail,
    responses=OWNER_ONLY,
)
def replace_selection(
    session: SessionDep,
    selection_id: OwnerKey,
    body: Annotated[
        SelectionReplace,
        Body(
            openapi_examples={
                "replace": {"value": {"name": "Brain MR", "dataset_slugs": ["brats-2021", "ixi"]}},
                "empty": {
                    "summary": "Keep the name, drop every dataset",
                    "value": {"name": "Brain MR", "dataset_slugs": []},
                },
            }
        ),
    ],
) -> SelectionDetail:
    """Replace the name and the whole dataset list (a null or missing name removes the name)."""
    selection = service.replace_selection(
        session, selection_id, name=body.name, dataset_slugs=body.dataset_slugs
    )
    return service.selection_detail(session, selection)


@router.post(
    "/selections/{selection_id}/datasets",
    operation_id="add_to_selection",
    response_model=SelectionDetail,
    responses=OWNER_ONLY,
)
def add_to_selection(
    session: SessionDep,
    selection_id: OwnerKey,
    body: Annotated[SelectionAdd, Body(openapi_examples={"add": {"value": {"slug": "lits"}}})],
) -> SelectionDetail:
    """Add one dataset at the end (adding one already there changes nothing)."""
    selection = service.add_dataset(session, selection_id, body.slug)
    return service.selection_detail(session, selection)


@router.delete(
    "/selections/{selection_id}/datasets/{slug}",
    operation_id="remove_from_selection",
    response_model=SelectionDetail,
    responses=OWNER_ONLY,
)
def remove_from_selection(
    session: SessionDep, selection_id: OwnerKey, slug: Annotated[str, Path(max_length=200)]
) -> SelectionDetail:
    """Remove one dataset; 404 when it is not in the selection."""
    selection = service.remove_dataset(session, selection_id, slug)
    return service.selection_detail(session, selection)


@router.delete(
    "/selections/{selection_id}",
    operation_id="delete_selection",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=OWNER_ONLY,
    response_class=Response,
)
def delete_selection(session: SessionDep, selection_id: OwnerKey) -> Response:
    """Delete the selection."""
    service.delete_selection(session, selection_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- comparison -------------------------------------------------------------------------------------------------
@router.get("/compare", operation_id="compare_datasets", response_model=CompareResponse)
def compare_datasets(
    session: SessionDep,
    d: Annotated[
        list[str],
        Query(description="A dataset slug; repeat 2 to 6 times", examples=[["lits", "chaos"]]),
    ] = [],  # noqa: B006  (FastAPI copies defaults; a list default is its documented way)
) -> CompareResponse:
    """2 to 6 datasets side by side: per field, each dataset's value and whether they differ."""
    return service.compare_datasets(session, d)


# -- exports ----------------------------------------------------------------------------------------------------
def _streamed(
    request: Request,
    fmt: ExportFormat,
    column: str,
    keys: Sequence[Any] | np.ndarray,
    subject: exports.ExportSubject,
) -> StreamingResponse:
    base_url = str(request.base_url).rstrip("/")

    def body() -> Iterator[bytes]:
        # The export outlives the route: it reads with a session of its own, closed when the stream ends.
        with new_session() as session:
            rows = exports.iter_datasets(session, column, keys)
            yield from exports.render(fmt, rows, subject, base_url)

    return StreamingResponse(
        body(),
        media_type=fmt.media_type,
        headers={"Content-Disposition": f'attachment; filename="{exports.filename(subject, fmt)}"'},
    )


@exports_router.get(
    "/datasets.{fmt}",
    operation_id="export_search",
    response_class=StreamingResponse,
    responses=EXPORT_RESPONSES,
)
def export_search(request: Request, session: SessionDep, search: SearchFilterDep, fmt: FormatSuffix) -> Any:
    """Every dataset a search matches (same query string as /datasets, no paging), in its order, as
    `.csv`, `.json`, `.bib` (BibTeX), `.jsonld` (schema.org DataCatalog of Croissant datasets) or
    `.manifest.json` (what to download, from where, after which access step)."""
    ids = ordered_dataset_ids(session, search)
    return _streamed(request, fmt, "id", ids, exports.search_subject(session, search))


@exports_router.get(
    "/selections/{selection_id}/export.{fmt}",
    operation_id="export_selection",
    response_class=StreamingResponse,
    responses=EXPORT_RESPONSES,
)
def export_selection(
    request: Request, session: SessionDep, selection_id: SelectionId, fmt: FormatSuffix
) -> Any:
    """A selection's datasets, in its order, in any export format (by its share id or its owner key)."""
    selection, _ = service.readable_selection(session, selection_id)
    subject = exports.selection_subject(session, selection)
    return _streamed(request, fmt, "slug", list(selection.dataset_slugs), subject)


@exports_router.get(
    "/plans/{plan_id}/export.{fmt}",
    operation_id="export_plan",
    response_class=StreamingResponse,
    responses=EXPORT_RESPONSES,
)
def export_plan(
    request: Request, session: SessionDep, plan_id: Annotated[str, Path(max_length=64)], fmt: FormatSuffix
) -> Any:
    """A saved MDFP plan's final dataset list, in any export format."""
    slugs = service.plan_slugs(session, plan_id)
    return _streamed(request, fmt, "slug", slugs, exports.plan_subject(session, plan_id))
