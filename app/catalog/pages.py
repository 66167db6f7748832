"""HTML pages of the catalog: one dataset. Same service call as the JSON twin at /api/v1/datasets/{slug}."""

import json
import re
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup, escape

from app.api.deps import SessionDep
from app.catalog import service
from app.catalog.schemas import DatasetDetail
from app.common.vocabularies import ALL
from app.core.templating import PageContext, TemplateHelpers, page_response
from app.core.urls import urls

router = APIRouter(include_in_schema=False)


def vocabulary_label(kind: str, value: str | None) -> str:
    """The display label of a vocabulary id ('MR' -> 'MR', 'whole_body' -> 'Whole body'); unknown ids as given."""
    if value is None:
        return "Unknown"
    vocabulary = ALL.get(kind)
    if vocabulary is not None and value in vocabulary:
        return vocabulary.term(value).label
    return value


def vocabulary_description(kind: str, value: str) -> str | None:
    vocabulary = ALL.get(kind)
    if vocabulary is not None and value in vocabulary:
        return vocabulary.term(value).description
    return None


def raw_value(value: Any) -> str:
    """A raw survey value shown verbatim: strings as written, everything else as its JSON literal."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def code_spans(text: str) -> Markup:
    """Escaped text with `backticked` commands shown as code (the access steps name commands that way)."""
    parts = str(escape(text)).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: leave the text as it is
        return escape(text)
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


def html_id(*parts: str) -> str:
    """A stable element id from free text (htmx keeps focus on an element whose id survives a swap)."""
    return "-".join(re.sub(r"[^A-Za-z0-9]+", "_", part).strip("_") or "_" for part in parts)


# What every page template may use (installed by app/api/routes.py)
TEMPLATE_HELPERS = TemplateHelpers(
    globals={
        "vocab_label": vocabulary_label,
        "vocab_description": vocabulary_description,
        "html_id": html_id,
    },
    filters={"raw_value": raw_value, "code_spans": code_spans},
)


@router.get("/datasets/{slug}", response_class=HTMLResponse, response_model=None)
def dataset_page(request: Request, session: SessionDep, slug: str) -> HTMLResponse | RedirectResponse:
    if (target := service.moved_to(session, slug)) is not None:  # merged into another dataset
        return RedirectResponse(urls.page_dataset(target), status_code=301)
    return page_response(
        request,
        "catalog/dataset.html",
        lambda: dataset_context(request, service.dataset_detail(session, slug)),
        service.catalog_key(session),
    )


@dataclass(frozen=True)
class DatasetPage(PageContext):
    """What catalog/dataset.html renders."""

    detail: DatasetDetail
    json_ld: dict[str, Any]  # schema.org Dataset, embedded in the page
    json_url: str


def dataset_context(request: Request, detail: DatasetDetail) -> DatasetPage:
    # schema.org wants an absolute URL for the page; the service only knows the path.
    json_ld = {**detail.json_ld, "url": str(request.base_url).rstrip("/") + detail.html_url}
    return DatasetPage(detail=detail, json_ld=json_ld, json_url=detail.api_url)
