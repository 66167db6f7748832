"""JSON routes of bundle jobs: thin wrappers around service.py (the pages and the CLI use the same calls)."""

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from app.api.deps import SessionDep
from app.bundles import service
from app.bundles import status as bundle_status
from app.bundles.schemas import BundleItemsPage, BundleJobList, BundleJobOut, BundleRequest
from app.common import tasks
from app.common.jobs import ItemState
from app.core.forms import set_visitor_cookie
from app.core.ranges import RangeNotSatisfiable, attachment, requested_range
from app.core.urls import urls

router = APIRouter()
TAR = "application/x-tar"
OWNER_COOKIE = "imagingx_bundles"
OWNER_HEADER = "X-Owner-Key"

JobId = Annotated[str, Path(description="The job id returned when the bundle was requested", max_length=64)]


def request_owner(request: Request) -> str | None:
    """Until accounts exist, whoever asked for a bundle is recognised by a random owner key: browsers hold it
    in a cookie, API clients send it back in the X-Owner-Key header (the header wins when both are sent)."""
    value = request.headers.get(OWNER_HEADER) or request.cookies.get(OWNER_COOKIE, "")
    return value if 16 <= len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum() else None


OWNER_KEY_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "The request did not carry the job's owner key (cookie or X-Owner-Key)"},
    409: {"description": "The job has already finished"},
}


@router.post(
    "/bundles",
    operation_id="create_bundle",
    response_model=BundleJobOut,
    status_code=status.HTTP_202_ACCEPTED,
)
def create_bundle(
    session: SessionDep,
    request: Request,
    response: Response,
    body: Annotated[
        BundleRequest,
        Body(
            openapi_examples={
                "datasets": {
                    "summary": "From dataset slugs",
                    "value": {"datasets": ["msd-liver", "ct-org"], "name": "Liver CT"},
                },
                "plan": {
                    "summary": "From a saved MDFP plan, with 2D slices",
                    "value": {"plan_id": "Jx3k...", "options": {"slices_2d": "axial", "test_fraction": 0.2}},
                },
            }
        ),
    ],
) -> BundleJobOut:
    """Request a fused bundle. Answers 202 at once with the job's id and `status_url`; workers download,
    harmonise and package in the background. Datasets without an automated source are reported in the job
    (state `manual`, with the step that gets their data), never faked. The job id is the only key to the
    bundle: keep it. Cancelling needs the owner key as well: the one sent with the request (X-Owner-Key
    header or `imagingx_bundles` cookie), else a new one, returned in the X-Owner-Key header and as that
    cookie. Requests with the same key list their bundles at `GET /bundles`."""
    owner = request_owner(request) or secrets.token_urlsafe(24)
    job, messages = service.create_job(session, body, owner=owner, base_url=str(request.base_url))
    tasks.send(messages)
    response.headers["Location"] = urls.bundle(job.id)
    response.headers[OWNER_HEADER] = owner
    if request.cookies.get(OWNER_COOKIE) != owner:
        set_visitor_cookie(request, response, OWNER_COOKIE, owner)
    return bundle_status.job_status(session, job)


@router.get("/bundles", operation_id="list_bundles", response_model=BundleJobList)
def list_bundles(session: SessionDep, request: Request) -> BundleJobList:
    """Bundles requested with this client's owner key (X-Owner-Key header, or the `imagingx_bundles` cookie
    the web pages and `POST /bundles` set), newest first. Without a key the list is empty: a bundle is private
    to whoever holds its id."""
    return bundle_status.job_list(session, request_owner(request))


@router.get("/bundles/{job_id}", operation_id="get_bundle", response_model=BundleJobOut)
def get_bundle(session: SessionDep, job_id: JobId) -> BundleJobOut:
    """A job's state (`queued`, `fetching`, `harmonising`, `packaging`, then `done`, `failed` or `cancelled`),
    progress per source and overall, skipped items with reasons, warnings, and once done the result with its
    checksums and `download_url`."""
    return bundle_status.job_status(session, service.get_job(session, job_id))


@router.get(
    "/bundles/{job_id}/items",
    operation_id="list_bundle_items",
    response_model=BundleItemsPage,
)
def list_bundle_items(
    session: SessionDep,
    job_id: JobId,
    state: Annotated[ItemState | None, Query(description="pending, done or skipped")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> BundleItemsPage:
    """Every item of the job with its state and, when skipped, the reason."""
    return bundle_status.list_items(session, service.get_job(session, job_id), state, offset, limit)


@router.post(
    "/bundles/{job_id}/cancel",
    operation_id="cancel_bundle",
    response_model=BundleJobOut,
    responses=OWNER_KEY_RESPONSES,
)
def cancel_bundle(session: SessionDep, request: Request, job_id: JobId) -> BundleJobOut:
    """Cancel a job that has not finished (409 otherwise). Only its owner may: send the owner key returned when
    it was requested (X-Owner-Key header, or the `imagingx_bundles` cookie); 403 otherwise. Downloads in flight
    stop within about a second (what they received stays in the cache for a later job); a case being
    harmonised finishes first."""
    job, messages = service.cancel_job(session, job_id, owner=request_owner(request))
    tasks.send(messages)
    return bundle_status.job_status(session, job)


@router.get(
    "/bundles/{job_id}/download",
    operation_id="download_bundle",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-tar": {}}, "description": "The bundle as one tar archive"},
        206: {"content": {"application/x-tar": {}}, "description": "The byte range asked for with `Range`"},
        409: {"description": "The job has not finished"},
        410: {"description": "The bundle is no longer in the store"},
        416: {"description": "The range starts past the end of the archive"},
    },
)
def download_bundle(session: SessionDep, job_id: JobId, request: Request) -> Response:
    """The finished bundle as one uncompressed tar (its volumes are gzip already), identical on every request.
    Supports `Range` (one range) and `If-Range` with the ETag (the archive's sha256), so an interrupted
    download resumes; 409 while the job is still running."""
    found = service.download(session, job_id)
    size, etag = found.archive.size, f'"{found.sha256}"'
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Content-Disposition": attachment(found.filename)}
    try:
        span = requested_range(request.headers.get("range"), request.headers.get("if-range"), etag, size)
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    if span is None:
        return StreamingResponse(
            found.archive.read(), media_type=TAR, headers={**headers, "Content-Length": str(size)}
        )
    start, end = span
    headers |= {"Content-Range": f"bytes {start}-{end - 1}/{size}", "Content-Length": str(end - start)}
    return StreamingResponse(found.archive.read(start, end), status_code=206, media_type=TAR, headers=headers)
