"""`imagingx catalog sources` and `imagingx catalog resolve-sources`: how the catalog's datasets are fetched."""

import json

import typer
from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)


def _session_required() -> None:
    from app.core.config import get_settings

    if not get_settings().database_url:
        console.print(
            "[red]error:[/red] DATABASE_URL is not set (or run `imagingx serve` with the same home)"
        )
        raise typer.Exit(2)


def sources(
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (as GET /api/v1/sources)."),
    limit: int = typer.Option(
        0, "--limit", min=0, help="List at most this many unresolved datasets (0: all)."
    ),
) -> None:
    """Counts of datasets by fetch method and by adapter, then every dataset that is not fetched automatically,
    with the reason and the next step."""
    from app.core.db import new_session
    from app.sources.service import sources_summary

    _session_required()
    with new_session() as session:
        summary = sources_summary(session)
    if as_json:
        print(json.dumps(summary.model_dump(mode="json"), indent=1))
        return
    console.print(f"catalog version {summary.catalog_version}, sources resolved with {summary.resolved_with}")
    console.print(
        ", ".join(f"{method}: {count}" for method, count in summary.counts.items())
        + f"; licence known for {summary.licences_known}",
        highlight=False,
    )
    kinds = Table("adapter", "datasets", title="By adapter")
    for kind, count in summary.by_kind.items():
        kinds.add_row(kind, str(count))
    console.print(kinds)
    rows = summary.unresolved[: limit or None]
    unresolved = Table("dataset", "fetch", "reason and next step", title="Not fetched automatically")
    for row in rows:
        unresolved.add_row(row["slug"], row["fetch"], row["reason"])
    console.print(unresolved)
    if len(rows) < len(summary.unresolved):
        console.print(f"... and {len(summary.unresolved) - len(rows)} more (--limit 0 lists all)")


def resolve_sources_command() -> None:
    """Resolve every dataset's source again (after editing rules or upgrading idc-index-data); descriptors set
    by hand with `set-source` stay."""
    from app.core.db import new_session
    from app.sources.service import resolve_sources

    _session_required()
    with new_session() as session:
        summary = resolve_sources(session)
    assert summary is not None
    console.print(
        ", ".join(f"{method}: {count}" for method, count in summary.counts.items())
        + f"; licence known for {summary.licences_known} ({summary.resolved_with})",
        highlight=False,
    )
