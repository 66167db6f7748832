"""MDFP plans: compute the four phases for a spec, save them, read them back. Called alike by the JSON API,
the pages and the CLI."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.catalog.service import catalog_version
from app.common.errors import NotFound
from app.core.urls import urls
from app.mdfp.models import Plan
from app.mdfp.phases import plan_phases
from app.mdfp.presets import get_preset, load_presets
from app.mdfp.schemas import PlanSpec, Preset
from app.mdfp.snapshot import load_snapshot


@dataclass
class ComputedPlan:
    catalog_version: int
    spec: PlanSpec
    phases: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    slugs: list[str]


def compute_plan(session: Session, spec: PlanSpec) -> ComputedPlan:
    """The four phases of `spec` on the current catalog (nothing is saved)."""
    version = catalog_version(session)
    snapshot = load_snapshot(session, version)
    phases, summary, slugs = plan_phases(snapshot, spec)
    return ComputedPlan(version, spec, phases, summary, slugs)


def new_plan_id() -> str:
    """128 random bits, URL-safe (22 characters): a plan's URL is how it is shared, so it must be unguessable."""
    return secrets.token_urlsafe(16)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), check_circular=False)


@dataclass
class StoredPlan:
    """A saved plan as JSON text: a large catalog's plan is megabytes, serialised once and never re-parsed
    on its way to PostgreSQL or to an API client."""

    id: str
    catalog_version: int
    created_at: datetime | None
    spec_json: str
    phases_json: str
    summary_json: str

    def document_json(self) -> str:
        head = {
            "ok": True,
            "id": self.id,
            "url": urls.page_plan(self.id),
            "api_url": urls.plan(self.id),
            "catalog_version": self.catalog_version,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }
        return (
            _dumps(head)[:-1]
            + f',"spec":{self.spec_json},"phases":{self.phases_json},"summary":{self.summary_json}}}'
        )


def _prefer_lz4(session: Session) -> None:
    """Compress this transaction's large values with lz4 when the server has it: a large plan's JSONB is
    megabytes, and pglz (the default) took twice as long to store it in bench/mdfp. Reading is unaffected."""
    has_lz4 = session.execute(
        text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
    ).scalar()
    if has_lz4:
        session.execute(text("SET LOCAL default_toast_compression = 'lz4'"))


def _store(session: Session, computed: ComputedPlan, owner: str | None) -> StoredPlan:
    plan_id = new_plan_id()
    spec_json = _dumps(computed.spec.model_dump(mode="json"))
    phases_json = _dumps(computed.phases)
    summary_json = _dumps(computed.summary)
    _prefer_lz4(session)
    created_at = session.execute(
        text(
            "INSERT INTO plan (id, spec, phases, summary, catalog_version, owner) "
            "VALUES (:id, CAST(:spec AS jsonb), CAST(:phases AS jsonb), CAST(:summary AS jsonb), :version, :owner) "
            "RETURNING created_at"
        ),
        {
            "id": plan_id,
            "spec": spec_json,
            "phases": phases_json,
            "summary": summary_json,
            "version": computed.catalog_version,
            "owner": owner,
        },
    ).scalar_one()
    session.commit()
    return StoredPlan(plan_id, computed.catalog_version, created_at, spec_json, phases_json, summary_json)


def create_plan(session: Session, spec: PlanSpec, owner: str | None = None) -> dict[str, Any]:
    """Compute and save a plan; returns its JSON document (the shape of `PlanOut`) as Python objects."""
    computed = compute_plan(session, spec)
    stored = _store(session, computed, owner)
    return plan_document(
        stored.id,
        computed.catalog_version,
        stored.created_at,
        spec.model_dump(mode="json"),
        computed.phases,
        computed.summary,
    )


def create_plan_json(session: Session, spec: PlanSpec, owner: str | None = None) -> StoredPlan:
    """Compute and save a plan; returns it as JSON text (what the API sends)."""
    return _store(session, compute_plan(session, spec), owner)


def plan_document(
    plan_id: str,
    version: int,
    created_at: datetime | None,
    spec: dict[str, Any],
    phases: list[dict[str, Any]],
    summary: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "ok": True,
        "id": plan_id,
        "url": urls.page_plan(plan_id),
        "api_url": urls.plan(plan_id),
        "catalog_version": version,
        "created_at": created_at.isoformat() if created_at else None,
        "spec": spec,
        "phases": phases,
        "summary": summary,
    }


def get_plan_row(session: Session, plan_id: str) -> Plan:
    plan = session.get(Plan, plan_id) if len(plan_id) <= 32 else None
    if plan is None:
        raise NotFound(f"plan {plan_id!r}")
    return plan


def get_plan(session: Session, plan_id: str) -> dict[str, Any]:
    plan = get_plan_row(session, plan_id)
    return plan_document(plan.id, plan.catalog_version, plan.created_at, plan.spec, plan.phases, plan.summary)


def get_plan_json(session: Session, plan_id: str) -> StoredPlan:
    """A saved plan as JSON text, straight from PostgreSQL (no parsing in Python)."""
    row = None
    if len(plan_id) <= 32:
        row = session.execute(
            text(
                "SELECT id, catalog_version, created_at, spec::text AS spec, phases::text AS phases, "
                "summary::text AS summary FROM plan WHERE id = :id"
            ),
            {"id": plan_id},
        ).one_or_none()
    if row is None:
        raise NotFound(f"plan {plan_id!r}")
    return StoredPlan(row.id, row.catalog_version, row.created_at, row.spec, row.phases, row.summary)


def plan_dataset_slugs(session: Session, plan_id: str) -> list[str]:
    """The slugs of a saved plan's final list, best ranked first (what a bundle or an export fetches).

    Read inside PostgreSQL: the final list's rows are arrays whose first field is the slug (FINAL_FIELDS)."""
    if len(plan_id) > 32:
        raise NotFound(f"plan {plan_id!r}")
    slugs = session.execute(
        text(
            'SELECT jsonb_path_query_array(phases, \'$[*] ? (@.id == "indexing").tables[*] '
            '? (@.id == "final").rows[*][0]\') FROM plan WHERE id = :id'
        ),
        {"id": plan_id},
    ).scalar_one_or_none()
    if slugs is None:
        raise NotFound(f"plan {plan_id!r}")
    return list(slugs)


def list_presets() -> list[Preset]:
    return list(load_presets())


def preset_spec(preset_id: str) -> PlanSpec:
    return get_preset(preset_id).spec
