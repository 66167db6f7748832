"""HTML pages of bundle jobs: the "Build bundle" form (on plan and selection pages), a job's page with live
progress, and the list of this browser's bundles.

The form is a plain POST that redirects (303) to the job's page, so it works without JavaScript. A job's page
polls a partial of itself with htmx while the job runs; the partial of a finished job carries no trigger, so
polling stops by itself. Without JavaScript a meta refresh does the same. Every page calls the same service
functions as the JSON API (app/bundles/api.py): the page and `/api/v1/bundles/{id}` cannot disagree.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

import app.catalog.pages  # noqa: F401  (registers the shared template helpers: code_spans, vocab_label...)
from app.api.deps import SessionDep
from app.bundles import service
from app.bundles import status as bundle_status
from app.bundles.api import OWNER_COOKIE, request_owner
from app.bundles.schemas import BundleJobOut, BundleJobSummary, BundleRequest
from app.catalog.models import Dataset
from app.common import tasks
from app.common.errors import Conflict, DomainError
from app.common.jobs import SLICE_AXES, SourceState
from app.core.config import get_settings
from app.core.errors import status_of
from app.core.forms import refuse_cross_site, same_site_form, set_visitor_cookie
from app.core.templating import PageContext, TemplateHelpers, render
from app.core.urls import urls
from app.selections.pages import visitor_selection
from app.selections.service import datasets_by_slug

router = APIRouter(include_in_schema=False)

BUNDLES_PATH = "/bundles"
MAX_FORM_BYTES = 50_000  # room for a form listing the most datasets a bundle may hold
POLL_EVERY = "1s"
# How the job page counts sources, in the order a reader wants them: what worked, what runs, what needs them.
SOURCE_COUNT_LABELS = {
    SourceState.fetched: "fetched",
    SourceState.fetching: "downloading",
    SourceState.pending: "waiting",
    SourceState.failed: "failed",
    SourceState.manual: "to download yourself",
    SourceState.cancelled: "cancelled",
}
# fields with a message beside them
FORM_FIELDS = (
    "name",
    "test_fraction",
    "val_fraction",
    "slices_2d",
    "max_subjects_per_dataset",
    "nnunet_dataset_id",
)
# The model's messages name API fields; the form's labels say "share".
FIELD_WORDS = {
    "test_fraction": "test share",
    "val_fraction": "validation share",
    "max_subjects_per_dataset": "subjects per dataset",
    "nnunet_dataset_id": "nnU-Net dataset id",
}
NAME_RULE = "letters, digits, spaces and . _ ( ) + - (starting with a letter or digit), at most 80 characters"


# -- template helpers -------------------------------------------------------------------------------------------
def human_duration(start: datetime | None, end: datetime | None) -> str | None:
    if start is None or end is None:
        return None
    seconds = max(0, round((end - start).total_seconds()))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def when(moment: datetime | None) -> str:
    """The database answers in its session's time zone: show UTC whatever that is."""
    if moment is None:
        return ""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


TEMPLATE_HELPERS = TemplateHelpers(
    globals={
        "human_duration": human_duration,
        "bundle_slice_axes": list(SLICE_AXES),
        "bundle_default_test_fraction": lambda: get_settings().bundle_test_fraction,
    },
    filters={"when": when},
)


# -- the owner cookie and form posts ------------------------------------------------------------------------------
async def form_pairs(request: Request) -> list[tuple[str, str]]:
    """The fields of a urlencoded form post from this site, repeated keys kept (one `dataset` each)."""
    return await same_site_form(request, max_bytes=MAX_FORM_BYTES)


FormPairs = Annotated[list[tuple[str, str]], Depends(form_pairs)]


@dataclass
class BuildForm:
    """What the build form sent, kept as typed so that a form shown again with errors keeps it."""

    plan_id: str = ""
    datasets: list[str] = field(default_factory=list)
    from_selection: bool = False
    name: str = ""
    test_fraction: str = ""
    val_fraction: str = ""
    slices_2d: str = ""
    max_subjects_per_dataset: str = ""
    labelled_series_only: bool = False
    nnunet_dataset_id: str = ""

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, str]]) -> BuildForm:
        fields = dict(pairs)
        return cls(
            plan_id=fields.get("plan_id", "").strip(),
            datasets=[value.strip() for key, value in pairs if key == "dataset" and value.strip()],
            from_selection=fields.get("from_selection") == "1",
            name=fields.get("name", "").strip(),
            test_fraction=fields.get("test_fraction", "").strip(),
            val_fraction=fields.get("val_fraction", "").strip(),
            slices_2d=fields.get("slices_2d", "").strip(),
            max_subjects_per_dataset=fields.get("max_subjects_per_dataset", "").strip(),
            labelled_series_only=fields.get("labelled_series_only") == "1",
            nnunet_dataset_id=fields.get("nnunet_dataset_id", "").strip(),
        )

    def raw_request(self, datasets: list[str] | None) -> dict[str, Any]:
        """The API's request body this form describes; the model validates it, so errors name real fields."""
        options: dict[str, Any] = {
            "test_fraction": self.test_fraction or None,
            "slices_2d": self.slices_2d or None,
            "max_subjects_per_dataset": self.max_subjects_per_dataset or None,
            "labelled_series_only": self.labelled_series_only,
            "nnunet_dataset_id": self.nnunet_dataset_id or None,
        }
        if self.val_fraction:
            options["val_fraction"] = self.val_fraction
        origin: dict[str, Any] = {"plan_id": self.plan_id} if self.plan_id else {"datasets": datasets}
        return {**origin, "name": self.name or None, "options": options}


def selection_slugs(request: Request, session: Session) -> list[str]:
    """The visitor's selection as the catalog has it now (read at post time, so a tab showing an older
    selection builds what the selection holds, and slugs the catalog dropped are left out)."""
    slugs = visitor_selection(request).slugs
    return [dataset.slug for dataset in datasets_by_slug(session, slugs)]


def form_errors(error: ValidationError) -> dict[str, list[str]]:
    """Messages keyed by the form field they concern ('test_fraction', 'name'); the rest under 'form'."""
    by_field: dict[str, list[str]] = {}
    for e in error.errors():
        loc = [part for part in e["loc"] if isinstance(part, str)]
        name = loc[-1] if loc and loc[-1] in FORM_FIELDS else "form"
        message = str(e["msg"]).removeprefix("Value error, ")
        for api_name, label in FIELD_WORDS.items():
            message = message.replace(api_name, label)
        if name == "name" and e["type"] == "string_pattern_mismatch":
            message = f"use {NAME_RULE}"
        by_field.setdefault(name, []).append(message)
    return by_field


def _form_page(
    request: Request, session: Session, form: BuildForm, errors: dict[str, list[str]], status: int
) -> HTMLResponse:
    """The form again, as it was sent, with what is wrong (instead of the page it came from)."""
    datasets = [] if form.plan_id or form.from_selection else datasets_by_slug(session, form.datasets)
    context = BuildFormPage(
        bundle_form=form,
        bundle_errors=errors,
        datasets=datasets,
        selection_count=visitor_selection(request).count if form.from_selection else 0,
    )
    return render(request, "bundles/new.html", context, status_code=status)


@dataclass(frozen=True)
class BuildFormPage(PageContext):
    """What bundles/new.html renders: the build form as it was sent, with what is wrong."""

    bundle_form: BuildForm
    bundle_errors: dict[str, list[str]]  # messages per form field ("form": about the whole form)
    datasets: list[Dataset]
    selection_count: int
    section: str = "bundles"


@dataclass(frozen=True)
class BundleListPage(PageContext):
    """What bundles/list.html and its htmx list render."""

    jobs: list[BundleJobSummary]
    running: bool  # a job is still running: the list refreshes itself
    json_url: str
    section: str = "bundles"


@dataclass(frozen=True)
class JobPage(PageContext):
    """What bundles/job.html and its htmx status render."""

    job: BundleJobOut
    can_cancel: bool  # only the owner may: others would get a 403
    source_counts: list[tuple[str, int, str]]
    finished: bool
    status_partial_url: str
    json_url: str
    cli_hint: str
    poll_every: str  # htmx polling interval, e.g. "1s"
    section: str = "bundles"


# -- routes -----------------------------------------------------------------------------------------------------
@router.post(BUNDLES_PATH, response_class=HTMLResponse)
def build_bundle(request: Request, session: SessionDep, pairs: FormPairs) -> Response:
    """Start a bundle job from the build form, then show its page (303)."""
    form = BuildForm.from_pairs(pairs)
    datasets: list[str] | None = None
    if not form.plan_id:
        datasets = selection_slugs(request, session) if form.from_selection else form.datasets
        if not datasets:
            what = "Your selection is empty" if form.from_selection else "No datasets were sent"
            errors = {"form": [f"{what}: add datasets to your selection, or build from a plan."]}
            return _form_page(request, session, form, errors, 422)
    try:
        bundle_request = BundleRequest.model_validate(form.raw_request(datasets))
    except ValidationError as error:
        return _form_page(request, session, form, form_errors(error), 422)
    owner = request_owner(request) or secrets.token_urlsafe(24)
    try:
        job, messages = service.create_job(
            session, bundle_request, owner=owner, base_url=str(request.base_url)
        )
    except (
        DomainError
    ) as error:  # an unknown plan or dataset, an empty plan, a store that cannot hold bundles
        return _form_page(request, session, form, {"form": [error.error]}, status_of(error))
    tasks.send(messages)
    response = RedirectResponse(f"{BUNDLES_PATH}/{job.id}", status_code=303)
    if request_owner(request) != owner:
        set_visitor_cookie(request, response, OWNER_COOKIE, owner)
    return response


@router.get(BUNDLES_PATH, response_class=HTMLResponse)
def bundles_page(request: Request, session: SessionDep) -> HTMLResponse:
    """This browser's bundles; htmx asks for the list alone (it refreshes while a job runs)."""
    jobs = bundle_status.list_jobs(session, request_owner(request))
    partial = request.headers.get("hx-request") == "true"
    context = BundleListPage(
        jobs=jobs, running=any(not job.state.finished for job in jobs), json_url=urls.bundles_path
    )
    name = "bundles/_list.html" if partial else "bundles/list.html"
    response = render(request, name, context)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Vary"] = "HX-Request, Cookie"
    return response


def source_counts(job: BundleJobOut) -> list[tuple[str, int, str]]:
    """(state, number of sources, words) for the states the job's sources are in."""
    counts = Counter(source.state for source in job.sources)
    return [
        (state.value, counts[state], label) for state, label in SOURCE_COUNT_LABELS.items() if counts[state]
    ]


def _job_context(job: BundleJobOut, can_cancel: bool) -> JobPage:
    return JobPage(
        job=job,
        can_cancel=can_cancel,
        source_counts=source_counts(job),
        finished=job.state.finished,
        status_partial_url=f"{BUNDLES_PATH}/{job.id}/status",
        json_url=job.status_url,
        cli_hint=f"imagingx bundle get {job.id}",
        poll_every=POLL_EVERY,
    )


def _job_response(request: Request, session: Any, job_id: str, template: str) -> HTMLResponse:
    record = service.get_job(session, job_id)
    job = bundle_status.job_status(session, record)
    can_cancel = service.is_owner(record, request_owner(request))
    response = render(request, template, _job_context(job, can_cancel))
    response.headers["Cache-Control"] = "no-store"  # live progress: never a stale copy
    return response


@router.get(BUNDLES_PATH + "/{job_id}", response_class=HTMLResponse)
def bundle_page(request: Request, session: SessionDep, job_id: str) -> HTMLResponse:
    return _job_response(request, session, job_id, "bundles/job.html")


@router.get(BUNDLES_PATH + "/{job_id}/status", response_class=HTMLResponse)
def bundle_status_partial(request: Request, session: SessionDep, job_id: str) -> HTMLResponse:
    """The job page's live part, polled by htmx; a finished job's has no trigger, which ends the polling."""
    return _job_response(request, session, job_id, "bundles/_status.html")


@router.post(BUNDLES_PATH + "/{job_id}/cancel", dependencies=[Depends(refuse_cross_site)])
def cancel_bundle(request: Request, session: SessionDep, job_id: str) -> Response:
    """Cancel, then back to the job's page; only the browser that built the bundle may (its owner cookie). A job
    that finished meanwhile is left as it is: its page says how it ended, which answers the click better than
    an error page would."""
    try:
        _, messages = service.cancel_job(session, job_id, owner=request_owner(request))
    except Conflict:  # finished meanwhile
        messages = []
    tasks.send(messages)
    return RedirectResponse(f"{BUNDLES_PATH}/{job_id}", status_code=303)
