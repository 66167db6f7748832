"""HTML pages of MDFP plans: the spec form (/plans/new) and a plan's four phases (/plans/{id}).

The form offers quick filters and a JSON editor over the same spec; either is validated server-side by the
same pydantic model as the API, and errors are shown next to the field they concern. Tables are plain HTML
(they work without JavaScript); static/mdfp.js draws the charts from the plan JSON embedded in the page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from app.api.deps import SessionDep
from app.catalog.pages import vocabulary_label  # noqa: F401  (registers the shared template helpers)
from app.catalog.service import catalog_version
from app.common.vocabularies import ALL
from app.core.templating import PageContext, render
from app.core.urls import urls
from app.mdfp import service
from app.mdfp.phases import table_rows
from app.mdfp.presets import SURVEY_PRESET, get_preset, load_presets
from app.mdfp.schemas import PlanSpec
from app.sources.service import fetch_overview_of

router = APIRouter(include_in_schema=False)

# Long tables show this many rows in the page; the JSON twin has them all.
ROWS_SHOWN = {"final": 300, "rejected": 300}
SELECTION_FIELDS = ("min_datasets_per_modality", "min_orgs_per_modality", "max_datasets", "max_total_images")
EXPORT_LABELS = {
    "csv": "CSV",
    "json": "JSON",
    "bib": "BibTeX",
    "jsonld": "JSON-LD (Croissant)",
    "manifest.json": "Download manifest",
}


def export_links(plan_id: str) -> list[tuple[str, str]]:
    """Exports of the final list, when the selections package (which serves them) is installed."""
    try:
        from app.selections.schemas import ExportFormat
    except ImportError:
        return []
    return [
        (EXPORT_LABELS.get(fmt.value, fmt.value), urls.plan(plan_id) + f"/export.{fmt.value}")
        for fmt in ExportFormat
    ]


# -- the form ------------------------------------------------------------------------------------------------
def choices(kind: str) -> list[tuple[str, str]]:
    vocabulary = ALL[kind]
    return [(t.id, t.label) for t in vocabulary.terms]


def form_values(spec: dict[str, Any]) -> dict[str, Any]:
    """What the quick filters show for a spec (lists as sets, free lists as comma-separated text)."""
    selection = spec.get("selection") or {}
    return {
        "goal": spec.get("goal") or "",
        "target_modalities": set(spec.get("target_modalities") or []),
        "target_task_types": set(spec.get("target_task_types") or []),
        "target_dims": set(spec.get("target_dims") or []),
        "access_allowlist": set(spec.get("access_allowlist") or []),
        "licence_allowlist": set(spec.get("licence_allowlist") or []),
        "anatomy_whitelist": ", ".join(spec.get("anatomy_whitelist") or []),
        "allow_3d_as_2d_sources": bool(spec.get("allow_3d_as_2d_sources")),
        "include_unlabeled": bool(spec.get("include_unlabeled", True)),
        "prefer_labeled": bool(spec.get("prefer_labeled", True)),
        "min_valid_images_per_dataset": spec.get("min_valid_images_per_dataset") or "",
        "release_year_min": spec.get("release_year_min") or "",
        "selection.enable": bool(selection.get("enable")),
        **{f"selection.{k}": "" if selection.get(k) is None else selection[k] for k in SELECTION_FIELDS},
    }


def spec_from_form(form: FormData) -> dict[str, Any]:
    """The raw spec the quick filters describe (validation is the model's job, so errors name real fields)."""

    def text(name: str) -> str:
        value = form.get(name)
        return value.strip() if isinstance(value, str) else ""

    def number(name: str) -> str | None:
        return text(name) or None

    def listed(name: str) -> list[str]:
        return [v for v in form.getlist(name) if isinstance(v, str) and v.strip()]

    anatomy = [part.strip() for part in text("anatomy_whitelist").split(",") if part.strip()]
    return {
        "goal": text("goal"),
        "target_modalities": listed("target_modalities"),
        "target_task_types": listed("target_task_types"),
        "target_dims": listed("target_dims"),
        "allow_3d_as_2d_sources": "allow_3d_as_2d_sources" in form,
        "anatomy_whitelist": anatomy or None,
        "licence_allowlist": listed("licence_allowlist") or None,
        "access_allowlist": listed("access_allowlist") or None,
        "include_unlabeled": "include_unlabeled" in form,
        "prefer_labeled": "prefer_labeled" in form,
        "min_valid_images_per_dataset": number("min_valid_images_per_dataset") or 0,
        "release_year_min": number("release_year_min"),
        "selection": {
            "enable": "selection.enable" in form,
            **{k: number(f"selection.{k}") for k in SELECTION_FIELDS},
        },
    }


def field_errors(error: ValidationError, prefix: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Errors keyed by the form field they concern ('target_modalities', 'selection.max_datasets')."""
    out = []
    for e in error.errors():
        loc = [*prefix, *e["loc"]]
        field = ".".join(str(part) for part in e["loc"] if isinstance(part, str))
        out.append({"field": field or "spec", "loc": loc, "path": _path(loc), "msg": e["msg"]})
    return out


def _path(loc: list[Any]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def form_context(
    spec: dict[str, Any],
    spec_json: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    preset_id: str | None = None,
    source: str = "filters",
) -> PlanFormPage:
    errors = errors or []
    by_field: dict[str, list[str]] = {}
    for e in errors:
        by_field.setdefault(e["field"], []).append(e["msg"])
    return PlanFormPage(
        values=form_values(spec),
        spec_json=spec_json if spec_json is not None else json.dumps(spec, indent=2, ensure_ascii=False),
        errors=errors,
        field_errors=by_field if source == "filters" else {},
        json_errors=errors if source == "json" else [],
        source=source,
        presets=load_presets(),
        preset_id=preset_id,
        choices={kind: choices(kind) for kind in ("modality", "task", "dim", "access", "licence")},
        selection_fields=SELECTION_FIELDS,
        schema_url=urls.api("/plans/schema"),
    )


@dataclass(frozen=True)
class PlanFormPage(PageContext):
    """What mdfp/new.html renders: the spec form (filters or JSON), as sent, with what is wrong."""

    values: dict[str, Any]
    spec_json: str
    errors: list[dict[str, Any]]
    field_errors: dict[str, list[str]]  # per form field, when the filters were sent
    json_errors: list[dict[str, Any]]  # when the JSON was sent
    source: str  # "filters" or "json": which form was sent
    presets: Any
    preset_id: str | None
    choices: dict[str, Any]
    selection_fields: Any
    schema_url: str
    section: str = "plan"


@dataclass(frozen=True)
class PlanPage(PageContext):
    """What mdfp/plan.html renders: a saved plan's four phases, summary, rejections and exports."""

    plan: dict[str, Any]
    spec: dict[str, Any]
    phases: list[dict[str, Any]]
    summary: dict[str, Any]
    comparison: dict[str, Any] | None
    comparison_notes: list[Any]
    rejected_by_rule: list[tuple[str, int]]
    chart_data: dict[str, Any]
    json_url: str
    export_links: list[tuple[str, str]]
    current_version: int
    spec_json: str
    fetch_overview: Any
    section: str = "plan"


@router.get("/plans/new", response_class=HTMLResponse)
def new_plan_page(
    request: Request,
    session: SessionDep,
    preset: Annotated[str | None, Query()] = None,
    from_plan: Annotated[str | None, Query(alias="from")] = None,
) -> HTMLResponse:
    if from_plan:
        spec = service.get_plan_row(session, from_plan).spec
        preset_id = None
    elif preset == "blank":
        spec, preset_id = PlanSpec().model_dump(mode="json"), "blank"
    else:
        preset_id = preset or SURVEY_PRESET
        spec = get_preset(preset_id).spec.model_dump(mode="json")
    return render(request, "mdfp/new.html", form_context(spec, preset_id=preset_id))


@router.post("/plans", response_class=HTMLResponse)
async def create_plan_from_form(request: Request, session: SessionDep) -> Any:
    form = await request.form()
    source = "json" if form.get("source") == "json" else "filters"
    spec_json = form.get("spec_json")
    spec_json = spec_json if isinstance(spec_json, str) else ""
    raw = spec_from_form(form)
    try:
        if source == "json":
            data = _parse_json(spec_json)
            spec = PlanSpec.model_validate(data)
        else:
            spec = PlanSpec.model_validate(raw, strict=False)  # form fields are text: '3' means 3
    except _JsonSyntaxError as error:
        errors = [{"field": "spec_json", "loc": ["spec"], "path": "spec", "msg": str(error)}]
        return _invalid(request, raw, spec_json, errors, source)
    except ValidationError as error:
        return _invalid(
            request, raw, spec_json if source == "json" else None, field_errors(error, ("spec",)), source
        )
    plan = service.create_plan(session, spec)
    return RedirectResponse(plan["url"], status_code=303)


class _JsonSyntaxError(ValueError):
    pass


def _parse_json(text: str) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise _JsonSyntaxError(
            f"not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
        ) from None
    if isinstance(data, dict) and set(data) == {"spec"}:
        data = data["spec"]  # the API's request body pasted whole
    if not isinstance(data, dict):
        raise _JsonSyntaxError('the spec must be a JSON object: {"target_modalities": [...], ...}')
    return data


def _invalid(
    request: Request, raw: dict[str, Any], spec_json: str | None, errors: list[dict[str, Any]], source: str
) -> HTMLResponse:
    context = form_context(raw, spec_json=spec_json, errors=errors, source=source)
    return render(request, "mdfp/new.html", context, status_code=422)


# -- a plan ------------------------------------------------------------------------------------------------
def shown_table(table: dict[str, Any]) -> dict[str, Any]:
    """The table as the page shows it: rows as objects, long lists cut (the JSON twin has every row)."""
    limit = ROWS_SHOWN.get(table["id"])
    rows = table_rows(table, limit)
    return {**table, "rows": rows, "hidden": table["total_rows"] - len(rows)}


@router.get("/plans/{plan_id}", response_class=HTMLResponse)
def plan_page(request: Request, session: SessionDep, plan_id: str) -> HTMLResponse:
    return render(request, "mdfp/plan.html", plan_context(session, service.get_plan(session, plan_id)))


def plan_context(session: Session, plan: dict[str, Any]) -> PlanPage:
    phases = plan["phases"]
    indexing = phases[3]
    tables = {t["id"]: t for t in indexing["tables"]}
    charts = {p["id"]: p["charts"] for p in phases}
    rejected_by_rule: dict[str, int] = {}
    rejected = tables["rejected"]
    rule_at = (rejected.get("fields") or []).index("rule") if rejected.get("fields") else None
    for row in rejected["rows"]:
        rule = row[rule_at] if rule_at is not None else row["rule"]
        rejected_by_rule[rule] = rejected_by_rule.get(rule, 0) + 1
    return PlanPage(
        plan=plan,
        spec=plan["spec"],
        phases=[
            {
                **p,
                "tables": [
                    shown_table(t) for t in p["tables"] if t["id"] not in ("summary", "survey_comparison")
                ],
            }
            for p in phases
        ],
        summary=tables["summary"],
        comparison=tables.get("survey_comparison"),
        comparison_notes=list(indexing["notes"][1:]),
        rejected_by_rule=sorted(rejected_by_rule.items(), key=lambda item: -item[1]),
        chart_data=charts,
        json_url=plan["api_url"],
        export_links=export_links(plan["id"]),
        current_version=catalog_version(session),
        spec_json=json.dumps(plan["spec"], indent=2, ensure_ascii=False),
        fetch_overview=fetch_overview_of(session, service.plan_dataset_slugs(session, plan["id"])),
    )
