"""`imagingx bundle ...`: request, watch and download fused bundles through the REST API of a running portal.

The CLI is a client of /api/v1/bundles (not of the database): it works against `imagingx serve` on this
machine or any portal it can reach, and it sees exactly what the web pages and API clients see.
Registered in app/cli.py as `main.add_typer(bundle_app, name="bundle")`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from app.core.urls import urls

bundle_app = typer.Typer(
    help="Request, watch and download fused bundles (talks to a running portal).", no_args_is_help=True
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

FINISHED = {"done", "failed", "cancelled"}
DEFAULT_URL = "http://127.0.0.1:8000"
UrlOption = typer.Option(
    None, "--url", help=f"Base URL of the portal (default $IMAGINGX_URL or {DEFAULT_URL})", show_default=False
)


def _base_url(url: str | None) -> str:
    return (url or os.environ.get("IMAGINGX_URL") or DEFAULT_URL).rstrip("/")


OWNER_KEY_FILE = "bundle-owner-key"


def _owner_key() -> str:
    """The key this user's bundles are requested with, kept in IMAGINGX_HOME (owner-only): the portal knows
    the user's bundles by it, so `cancel` works and each new bundle gets an nnU-Net id none of the user's
    other bundles has."""
    from app.core.config import get_settings

    path = get_settings().home / OWNER_KEY_FILE
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError:
        key = ""
    if 16 <= len(key) <= 64 and key.replace("-", "").replace("_", "").isalnum():
        return key
    key = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(key + "\n", encoding="utf-8")
    temporary.chmod(0o600)
    os.replace(temporary, path)
    return key


def _client(url: str | None) -> httpx.Client:
    return httpx.Client(base_url=_base_url(url), timeout=60, headers={"X-Owner-Key": _owner_key()})


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"error: {message}", markup=False, highlight=False)
    return typer.Exit(code)


def _api(client: httpx.Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One API call; the portal's error envelope becomes a one-line message and exit code 1."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as error:
        raise _fail(f"cannot reach the portal at {client.base_url}: {error}") from error
    if response.is_success:
        answer: dict[str, Any] = response.json()  # every bundle endpoint answers a JSON object
        return answer
    try:
        body = response.json()
        detail = body.get("error") or str(body)
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}" for e in body.get("errors", [])
        ]
    except ValueError:
        detail, problems = response.text[:300], []
    raise _fail(f"HTTP {response.status_code}: {detail}" + ("".join(f"\n  {p}" for p in problems[:10])))


TimeoutOption = typer.Option(
    None,
    "--timeout",
    min=1,
    help="Stop watching after this many seconds (exit code 3); the job itself goes on. Default: no limit.",
)
WATCH_TIMED_OUT = 3  # the exit code when --timeout ends the watch: the job is still running, not failed


def _watch(
    client: httpx.Client, job_id: str, interval: float, timeout: float | None = None
) -> dict[str, Any]:
    """Poll the job with a progress bar until it finishes, printing each source once it has an outcome. Past
    `timeout` seconds, or on Ctrl-C, stop watching with a message that says how to follow the job (which goes
    on in the portal either way)."""
    try:
        return _poll(client, job_id, interval, None if timeout is None else time.monotonic() + timeout)
    except KeyboardInterrupt:
        raise _fail(
            f"stopped watching; bundle {job_id} goes on: `imagingx bundle status {job_id}`", 130
        ) from None


def _poll(client: httpx.Client, job_id: str, interval: float, deadline: float | None) -> dict[str, Any]:
    reported: set[str] = set()
    with Progress(
        TextColumn("[bold]{task.fields[state]:<11}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("", total=1.0, state="queued")
        while True:
            status = _api(client, "GET", urls.bundle(job_id))
            counts = status["progress"]
            progress.update(
                task,
                completed=counts["fraction"],
                state=status["state"],
                description=f"sources {counts['sources_finished']}/{counts['sources_total']}, "
                f"items {counts['items_finished']}/{counts['items_total']}",
            )
            for source in status["sources"]:
                if (
                    source["state"] in ("fetched", "failed", "manual", "cancelled")
                    and source["slug"] not in reported
                ):
                    reported.add(source["slug"])
                    detail = f": {source['detail']}" if source["detail"] else ""
                    progress.console.print(
                        f"  {source['slug']}: {source['state']}{detail}", markup=False, highlight=False
                    )
            if status["state"] in FINISHED:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise _fail(
                    f"bundle {job_id} is still {status['state']}; it goes on: `imagingx bundle status {job_id}`, "
                    f"or `imagingx bundle get {job_id} --wait`",
                    WATCH_TIMED_OUT,
                )
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))


def _summary(status: dict[str, Any]) -> None:
    table = Table(title=f"{status['name']} ({status['id']})", show_lines=False)
    for column in ("source", "state", "files", "items done", "skipped"):
        table.add_column(column)
    for source in status["sources"]:
        table.add_row(
            source["slug"],
            source["state"],
            str(source["files"]),
            str(source["items_done"]),
            str(source["items_skipped"]),
        )
    console.print(table)
    for item in status["skipped"]:
        where = f"{item.get('stage') or '?'}, {item.get('file') or item['item_id']}"
        console.print(
            f"  skipped {item['item_id']} ({where}): {item['reason']}", markup=False, highlight=False
        )
    for warning in status["warnings"]:
        console.print(f"  warning: {warning}", markup=False, highlight=False)
    if status["state"] == "done":
        result = status["result"]
        console.print(
            f"done: {result['items']} items, {result['skipped']} skipped, {result.get('altered', 0)} altered, "
            f"{result['files']} files, archive {result['archive_bytes']:,} bytes, sha256 {result['archive_sha256']}",
            markup=False,
        )
        if result.get("nnunet_ids"):
            ids = ", ".join(str(i) for i in result["nnunet_ids"])
            console.print(f"nnU-Net dataset ids: {ids}", markup=False, highlight=False)
    elif status["error"]:
        console.print(f"{status['state']}: {status['error']}", markup=False, highlight=False)


@bundle_app.command("build")
def build(
    datasets: list[str] = typer.Argument(None, help="Dataset slugs to fuse (or use --plan)."),
    plan: str | None = typer.Option(None, "--plan", help="A saved MDFP plan's id: its final list is fused."),
    name: str | None = typer.Option(None, "--name", help="The bundle's name."),
    test_fraction: float | None = typer.Option(
        None, "--test-fraction", help="Share of subjects in the test split."
    ),
    val_fraction: float = typer.Option(0.0, "--val-fraction", help="Share of subjects in validation."),
    slices: str | None = typer.Option(
        None, "--slices", help="Also export 3D cases as 2D slices: axial, coronal or sagittal."
    ),
    nnunet_id: int | None = typer.Option(
        None,
        "--nnunet-id",
        help="The bundle's nnU-Net dataset id (1..999); default: the first from 500 none of your bundles uses.",
    ),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Watch the job until it ends (default) or return at once."
    ),
    download: Path | None = typer.Option(
        None, "--download", help="When done, download the archive into this folder."
    ),
    interval: float = typer.Option(1.0, "--interval", min=0.1, help="Seconds between status polls."),
    timeout: float | None = TimeoutOption,
    url: str | None = UrlOption,
) -> None:
    """Request a fused bundle, watch its progress, and optionally download it."""
    if bool(datasets) == bool(plan):
        raise _fail("give dataset slugs or --plan ID (not both)", 2)
    options: dict[str, Any] = {"val_fraction": val_fraction}
    if test_fraction is not None:
        options["test_fraction"] = test_fraction
    if slices:
        options["slices_2d"] = slices
    if nnunet_id is not None:
        options["nnunet_dataset_id"] = nnunet_id
    body: dict[str, Any] = {"options": options}
    body.update({"plan_id": plan} if plan else {"datasets": list(datasets)})
    if name:
        body["name"] = name
    with _client(url) as client:
        job = _api(client, "POST", urls.bundles_path, json=body)
        console.print(
            f"bundle {job['id']} requested: {client.base_url}{job['page_url']}", markup=False, highlight=False
        )
        if not wait:
            return
        status = _watch(client, job["id"], interval, timeout)
        _summary(status)
        if status["state"] != "done":
            raise typer.Exit(1)
        if download is not None:
            _download(client, status, download)


@bundle_app.command("status")
def status_command(
    job_id: str = typer.Argument(..., help="The bundle's id."), url: str | None = UrlOption
) -> None:
    """Show a bundle job's state, sources, skipped items and result."""
    with httpx.Client(base_url=_base_url(url), timeout=60) as client:
        _summary(_api(client, "GET", urls.bundle(job_id)))


@bundle_app.command("cancel")
def cancel(job_id: str = typer.Argument(..., help="The bundle's id."), url: str | None = UrlOption) -> None:
    """Cancel a bundle job that has not finished (one requested from this account: IMAGINGX_HOME holds its
    owner key)."""
    with _client(url) as client:
        status = _api(client, "POST", urls.bundle(job_id) + "/cancel")
    console.print(f"bundle {job_id}: {status['state']}", markup=False)


@bundle_app.command("get")
def get(
    job_id: str = typer.Argument(..., help="The bundle's id."),
    output: Path = typer.Option(Path("."), "--output", "-o", help="Folder to write the archive into."),
    wait: bool = typer.Option(
        False, "--wait", help="If the job is still running, watch it and download when done."
    ),
    timeout: float | None = TimeoutOption,
    url: str | None = UrlOption,
) -> None:
    """Download a finished bundle's archive (resumes an interrupted download; verifies its sha256)."""
    with httpx.Client(base_url=_base_url(url), timeout=60) as client:
        status = _api(client, "GET", urls.bundle(job_id))
        if status["state"] not in FINISHED and wait:
            status = _watch(client, job_id, 1.0, timeout)
        if status["state"] != "done":
            raise _fail(
                f"bundle {job_id} is {status['state']}" + (f": {status['error']}" if status["error"] else "")
            )
        _download(client, status, output)


def _download(client: httpx.Client, status: dict[str, Any], folder: Path) -> Path:
    """Stream the archive to `<job id>.tar.part`, resuming from its size with Range, then verify and rename."""
    result = status["result"]
    folder.mkdir(parents=True, exist_ok=True)
    response_name = None
    partial = folder / f"{status['id']}.tar.part"
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if 0 < have < result["archive_bytes"] else {}
    if not headers:
        partial.unlink(missing_ok=True)
        have = 0
    with (
        client.stream("GET", status["download_url"], headers=headers, timeout=None) as response,
        Progress(
            TextColumn("download"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console
        ) as progress,
    ):
        if response.status_code not in (200, 206):
            raise _fail(f"download answered HTTP {response.status_code}")
        if response.status_code == 200:
            have = 0
        disposition = response.headers.get("content-disposition", "")
        if 'filename="' in disposition:
            response_name = disposition.split('filename="', 1)[1].split('"', 1)[0]
        task = progress.add_task("", total=result["archive_bytes"], completed=have)
        with partial.open("ab" if have else "wb") as sink:
            for chunk in response.iter_bytes(1 << 20):
                sink.write(chunk)
                progress.advance(task, len(chunk))
    digest = hashlib.sha256()
    with partial.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != result["archive_sha256"]:
        partial.unlink(missing_ok=True)
        raise _fail(
            f"the download's sha256 {digest.hexdigest()} differs from the bundle's {result['archive_sha256']}"
        )
    final = folder / Path(response_name or f"{status['id']}.tar").name
    os.replace(partial, final)
    console.print(
        f"saved {final} ({final.stat().st_size:,} bytes, sha256 verified)", markup=False, highlight=False
    )
    return final
