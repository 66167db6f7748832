"""`imagingx plan spec.json`: run the MDFP planner from the command line and print each phase as tables.

Registered in app/cli.py as `main.command("plan")(plan)`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from app.mdfp.phases import table_rows
from app.mdfp.schemas import PlanSpec

console = Console(soft_wrap=True)
NUMERIC = {"int", "ratio"}


def plan(
    spec_file: Path | None = typer.Argument(
        None,
        exists=True,
        dir_okay=False,
        readable=True,
        help="The spec as JSON (the `spec` of POST /api/v1/plans, or the whole body).",
    ),
    preset: str | None = typer.Option(None, "--preset", help="Use a shipped preset instead of a file."),
    save: bool = typer.Option(False, "--save/--no-save", help="Save the plan and print its URL."),
    json_out: Path | None = typer.Option(
        None,
        "--json",
        help="Write the plan JSON to this file ('-' writes it to stdout instead of the tables).",
    ),
    rows: int = typer.Option(10, "--rows", min=0, help="Rows shown of the final and the rejected lists."),
) -> None:
    """Plan a fused dataset (MDFP): the four phases for a spec on the current catalog."""
    from app.core.config import get_settings
    from app.core.db import new_session
    from app.mdfp import service
    from app.mdfp.presets import get_preset

    if (spec_file is None) == (preset is None):
        console.print("[red]error:[/red] give a spec file or --preset NAME (not both)")
        raise typer.Exit(2)
    if preset is not None:
        spec = get_preset(preset).spec
    else:
        assert spec_file is not None
        spec = _read_spec(spec_file)
    if not get_settings().database_url:
        console.print("[red]error:[/red] DATABASE_URL is not set")
        raise typer.Exit(2)

    with new_session() as session:
        if save:
            document = service.create_plan(session, spec)
        else:
            computed = service.compute_plan(session, spec)
            document = service.plan_document(
                "",
                computed.catalog_version,
                None,
                spec.model_dump(mode="json"),
                computed.phases,
                computed.summary,
            )
            document.update(id=None, url=None, api_url=None)

    if json_out is not None:
        text = json.dumps(document, ensure_ascii=False, indent=2)
        if str(json_out) == "-":
            sys.stdout.write(text + "\n")
            return
        json_out.write_text(text + "\n", encoding="utf-8")
    print_plan(document, rows)
    if json_out is not None:
        console.print(f"plan JSON written to {json_out}")
    if save:
        console.print(f"saved as plan {document['id']}: page {document['url']}, JSON {document['api_url']}")


def _read_spec(path: Path) -> PlanSpec:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        console.print(
            f"[red]error:[/red] {path} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
        )
        raise typer.Exit(2) from None
    if isinstance(data, dict) and set(data) == {"spec"}:
        data = data["spec"]
    try:
        return PlanSpec.model_validate(data)
    except ValidationError as error:
        console.print(f"[red]error:[/red] {path} is not a valid spec:")
        for e in error.errors():
            where = ".".join(str(part) for part in e["loc"]) or "spec"
            console.print(f"  {where}: {e['msg']}", markup=False, highlight=False)
        raise typer.Exit(2) from None


def _cell(kind: str, value: Any) -> str:
    if value is None:
        return "n/a" if kind == "ratio" else "unknown"
    if kind == "int":
        return f"{value:,}"
    if kind == "ratio":
        return f"{value:.5g}"
    if kind == "bool":
        return "yes" if value else "no"
    if isinstance(value, list):
        return ("\n" if kind == "notes" else ", ").join(str(v) for v in value)
    return str(value)


def rich_table(table: dict[str, Any], limit: int | None = None) -> Table:
    shown = table_rows(table, limit)
    title = table["title"]
    if len(shown) < table["total_rows"]:
        title += f" (first {len(shown):,} of {table['total_rows']:,})"
    out = Table(title=title, title_justify="left", show_lines=False)
    for column in table["columns"]:
        out.add_column(
            column["label"], justify="right" if column["kind"] in NUMERIC else "left", overflow="fold"
        )
    for row in shown:
        out.add_row(*(_cell(c["kind"], row.get(c["key"])) for c in table["columns"]))
    return out


def print_plan(document: dict[str, Any], rows: int = 10) -> None:
    spec = document["spec"]
    console.print(f"[bold]{spec.get('goal') or 'Untitled plan'}[/bold]")
    console.print(f"catalog version {document['catalog_version']}", highlight=False)
    for phase in document["phases"]:
        console.rule(f"{phase['number']} {phase['name']}")
        facts = Table(show_header=False, box=None)
        facts.add_column(justify="left")
        facts.add_column(justify="right")
        for fact in phase["facts"]:
            value = fact["value"]
            facts.add_row(fact["label"], f"{value:,}" if isinstance(value, int) else str(value))
        console.print(facts)
        for table in phase["tables"]:
            limit = rows if table["id"] in ("final", "rejected") else None
            console.print(rich_table(table, limit))
        for note in phase.get("notes", []):
            console.print(f"note: {note}", markup=False, highlight=False)
