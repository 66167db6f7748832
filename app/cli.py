"""The `imagingx` command. Each command is a thin wrapper over a service or supervisor function."""

import os
import sys
from pathlib import Path

import typer
from rich.console import Console

main = typer.Typer(
    name="imagingx",
    help="Imaging-X Portal: find open medical imaging datasets and fuse them into training-ready bundles.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
catalog_app = typer.Typer(help="The dataset catalog.", no_args_is_help=True)
main.add_typer(db_app, name="db")
main.add_typer(catalog_app, name="catalog")

console = Console(soft_wrap=True)


@main.callback()
def _use_running_portal(ctx: typer.Context) -> None:
    """Commands other than `serve` use the services of an `imagingx serve` running with the same IMAGINGX_HOME
    when DATABASE_URL / REDIS_URL are not set: its embedded PostgreSQL and Redis listen on random ports."""
    if ctx.invoked_subcommand == "serve":
        return
    from app.core.config import get_settings
    from app.stack import reload_settings, running_services

    settings = get_settings()
    if settings.database_url and settings.redis_url:
        return
    services = running_services(settings.home.expanduser().resolve())
    if services is None:
        return
    for variable, key in (
        ("DATABASE_URL", "database_url"),
        ("REDIS_URL", "redis_url"),
        ("IMAGINGX_URL", "url"),
    ):
        if services.get(key) and not os.environ.get(variable):
            os.environ[variable] = services[key]
    reload_settings()


def _require(setting: str, value: str | None) -> None:
    if not value:
        console.print(
            f"[red]error:[/red] {setting} is not set. Set it, or run `imagingx serve`, which starts an "
            "embedded PostgreSQL and Redis when they are not configured."
        )
        raise typer.Exit(2)


def _echo(line: str) -> None:
    # plain print: scripts wait for the URL line, which rich could wrap or colour
    print(line, flush=True)


@main.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address the web app listens on."),
    port: int = typer.Option(8000, help="Port the web app listens on."),
    workers: int = typer.Option(2, "--worker-concurrency", min=1, help="Celery worker processes."),
) -> None:
    """Run everything: PostgreSQL and Redis (embedded unless configured), migrations, a worker, the web app."""
    from app.stack import serve as serve_stack

    raise typer.Exit(serve_stack(host, port, worker_concurrency=workers, out=_echo))


@main.command()
def web(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Run only the web app (uvicorn), against the configured DATABASE_URL and REDIS_URL."""
    from app.core.config import get_settings
    from app.stack import web_argv

    _require("DATABASE_URL", get_settings().database_url)
    argv = web_argv(host, port)
    os.execv(argv[0], argv)


@main.command()
def worker(
    concurrency: int | None = typer.Option(None, help="Worker processes (default: one per CPU)."),
    queues: str | None = typer.Option(
        None, help="Comma-separated queues to consume (default: IMAGINGX_CELERY_QUEUE, imagingx)."
    ),
) -> None:
    """Run only a Celery worker, against the configured REDIS_URL and DATABASE_URL."""
    from app.core.config import get_settings
    from app.core.processes import drop_privileges
    from app.stack import UnknownAccount, prepare_worker, worker_account, worker_argv

    settings = get_settings()
    _require("REDIS_URL", settings.redis_url)
    _require("DATABASE_URL", settings.database_url)
    try:
        account = worker_account(settings)
    except UnknownAccount as error:
        console.print(f"error: {error}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    argv = worker_argv(concurrency=concurrency, queues=queues)
    if account is not None:
        # run as root, the worker would parse untrusted archives and images with every privilege
        os.environ.update(prepare_worker(account, settings))
        print(
            f"The worker runs as {account.name} (IMAGINGX_WORKER_USER), not root", file=sys.stderr, flush=True
        )
        drop_privileges(account)
    os.execv(argv[0], argv)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Upgrade the database to the newest schema."""
    from app.core.config import get_settings
    from app.core.db import run_migrations

    _require("DATABASE_URL", get_settings().database_url)
    run_migrations()
    console.print("database is at the newest schema")


@catalog_app.command("import")
def catalog_import(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="Survey-format JSON."),
) -> None:
    """Import (or re-import) a catalog file; curated fields survive."""
    from app.core.config import get_settings
    from app.stack import load_catalog

    _require("DATABASE_URL", get_settings().database_url)
    summary = load_catalog(file)
    for line in summary.as_lines():
        console.print(line, markup=False, highlight=False)


@catalog_app.command("seed")
def catalog_seed() -> None:
    """Import the seed catalog shipped with the app, only if the catalog is empty."""
    from app.core.config import get_settings
    from app.stack import load_catalog

    _require("DATABASE_URL", get_settings().database_url)
    summary = load_catalog(only_if_empty=True)
    if summary is None:
        console.print("the catalog already has datasets: nothing to do")
        return
    for line in summary.as_lines():
        console.print(line, markup=False, highlight=False)


@catalog_app.command("set-source")
def catalog_set_source(
    slug: str = typer.Argument(..., help="The dataset's slug (as in its URL)."),
    file: Path | None = typer.Argument(
        None,
        exists=True,
        dir_okay=False,
        readable=True,
        help="The source descriptor as JSON (formats: README, Sources).",
    ),
    clear: bool = typer.Option(False, "--clear", help="Remove the dataset's source instead."),
) -> None:
    """Say how workers fetch a dataset automatically (a source descriptor), or remove that with --clear."""
    import json

    from app.catalog.service import set_source
    from app.common.errors import DomainError
    from app.core.config import get_settings
    from app.core.db import new_session

    _require("DATABASE_URL", get_settings().database_url)
    if (file is None) == (not clear):
        console.print("[red]error:[/red] give a descriptor FILE or --clear (not both)")
        raise typer.Exit(2)
    try:
        descriptor = None if file is None else json.loads(file.read_text())  # no file exactly when --clear
    except (ValueError, UnicodeDecodeError) as error:
        console.print(f"[red]error:[/red] {file} is not JSON: {error}")
        raise typer.Exit(2) from error
    with new_session() as session:
        try:
            dataset = set_source(session, slug, descriptor)
        except DomainError as error:
            console.print(f"error: {error.error}", markup=False, highlight=False)
            raise typer.Exit(1) from error
    kind = dataset.source["kind"] if dataset.source else None
    console.print(f"{slug}: source {'removed' if kind is None else 'set (' + kind + ')'}")


# Domain commands live beside their domain; registered here so `imagingx --help` lists them all.
from app.mdfp.cli import plan as plan_command  # noqa: E402

main.command("plan")(plan_command)
from app.bundles.cli import bundle_app  # noqa: E402
from app.sources.cli import resolve_sources_command, sources  # noqa: E402

catalog_app.command("sources")(sources)
catalog_app.command("resolve-sources")(resolve_sources_command)

main.add_typer(bundle_app, name="bundle")


if __name__ == "__main__":
    sys.exit(main())
