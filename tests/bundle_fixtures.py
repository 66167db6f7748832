"""Fixture sources for whole bundle jobs: real images (tests/imaging_fixtures.py) packed as the archives hosts
serve, put on a local HTTP server, and attached to real catalog datasets as source descriptors.

| catalog slug  | what it serves                                                                  |
|---------------|---------------------------------------------------------------------------------|
| msd03-liver   | MSD tar.gz: 3 training cases + 1 official test case, labels liver/spleen, and   |
|               | one corrupt training image (truncated gzip) that must be skipped with a reason  |
| ct-org        | zip of image/mask pairs labelled "Hepatic" (= liver) only, i.e. partial labels; |
|               | scan_17 is MSD's abdomen_000 stored in another orientation (a duplicate)        |
| chaos-ct      | DICOM series + separate label file per patient; patient02 has a slice gap       |
| ham10000      | 2D classification, class-per-folder PNGs (zip)                                  |
| isic16        | a malicious tar (a `../` member): the source must fail, nothing written outside |
| lits          | no source at all: reported as `manual` with its access step                     |
| msd01-braintumour | two channels (t1, t2) per case, suffix pairs (zip); only the multi-channel test |
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fixtures_http import LocalHTTPServer
from imaging_fixtures import (
    build_brats_like_source,
    build_class_folder_source,
    build_dicom_source,
    build_msd_source,
    build_partial_source,
)

SLUGS = ("msd03-liver", "ct-org", "chaos-ct", "ham10000", "isic16", "lits")


def _tar_gz(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=f"{folder.name}/{path.relative_to(folder).as_posix()}")
            info.mtime = 0
            if path.is_file():
                tar.addfile(info, path.open("rb"))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def _zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def _traversal_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        payload = b"written outside the job folder"
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


@dataclass
class ServedSources:
    server: LocalHTTPServer
    descriptors: dict[str, dict[str, Any]]
    paths: dict[str, str]  # slug -> served path of its (first) file


def build_archives(root: Path, salt: str = "") -> dict[str, tuple[str, bytes, dict[str, Any]]]:
    """slug -> (file name, bytes, extra descriptor keys). A `salt` (written into a README in each source) gives
    archives with other checksums, so a test can start with a download cache that does not hold them."""
    msd = build_msd_source(root / "msd") / "Task98_Abdomen"
    intact = (msd / "imagesTr" / "abdomen_001.nii.gz").read_bytes()
    # a download cut short upstream: not a readable volume, though its label is fine
    (msd / "imagesTr" / "abdomen_099.nii.gz").write_bytes(intact[: len(intact) // 3])
    (msd / "labelsTr" / "abdomen_099.nii.gz").write_bytes(
        (msd / "labelsTr" / "abdomen_001.nii.gz").read_bytes()
    )
    # (issue 10, the bundle's account) a label without an image, which no case uses, and the licence MSD's
    # dataset.json states, which the bundle carries with its source
    (msd / "labelsTr" / "abdomen_077.nii.gz").write_bytes(
        (msd / "labelsTr" / "abdomen_002.nii.gz").read_bytes()
    )
    meta = json.loads((msd / "dataset.json").read_text())
    (msd / "dataset.json").write_text(json.dumps({**meta, "licence": "CC-BY-SA 4.0"}, indent=2))
    partial = build_partial_source(root / "ctorg")
    dicom = build_dicom_source(root / "dicom")
    classes = build_class_folder_source(root / "classes")
    brats = build_brats_like_source(root / "brats")
    if salt:
        for folder in (msd, partial, dicom, classes, brats):
            (folder / "README.txt").write_text(f"fixture {salt}\n")
    return {
        "msd03-liver": ("Task98_Abdomen.tar.gz", _tar_gz(msd), {}),
        "ct-org": ("ctorg.zip", _zip(partial), {"labels": {"1": "Hepatic"}}),
        "chaos-ct": ("chaos.zip", _zip(dicom), {"labels": {"1": "kidney", "2": "spleen"}}),
        "ham10000": ("ham.zip", _zip(classes), {}),
        "isic16": ("isic16.tar", _traversal_tar(), {}),
        # two channels per case (t1, t2) and a label: served for the multi-channel test, not in SLUGS
        "msd01-braintumour": ("brats.zip", _zip(brats), {"labels": {"1": "tumour core", "2": "oedema"}}),
    }


@contextmanager
def served_sources(
    root: Path, delays: dict[str, float] | None = None, salt: str = "", rates: dict[str, int] | None = None
) -> Iterator[ServedSources]:
    """`delays`: seconds the server waits before answering each request for a slug's file; `rates`: bytes
    per second it sends a slug's file at."""
    archives = build_archives(root, salt)
    with LocalHTTPServer() as server:
        descriptors, paths = {}, {}
        for slug, (name, body, extra) in archives.items():
            path = f"/{slug}/{name}"
            server.add_file(path, body, delay=(delays or {}).get(slug, 0.0), rate=(rates or {}).get(slug))
            descriptors[slug] = {
                "kind": "http",
                "files": [
                    {"url": server.url(path), "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
                ],
                **extra,
            }
            paths[slug] = path
        yield ServedSources(server, descriptors, paths)


@contextmanager
def sources_attached(descriptors: dict[str, dict[str, Any]]) -> Iterator[None]:
    """Set the descriptors on the catalog (the service `imagingx catalog set-source` calls), remove after."""
    from app.catalog.service import set_source
    from app.core.db import new_session

    with new_session() as session:
        for slug, descriptor in descriptors.items():
            set_source(session, slug, descriptor)
    try:
        yield
    finally:
        with new_session() as session:
            for slug in descriptors:
                set_source(session, slug, None)


@dataclass
class Worker:
    """A Celery worker of our own (its own queue and settings) that a test may kill with SIGKILL."""

    process: subprocess.Popen[bytes]
    queue: str
    log_file: Path

    def kill(self) -> None:
        """SIGKILL to the worker and its pool children at once: no cleanup, no acknowledgement."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")[-4000:]


def start_worker(queue: str, log_file: Path, **settings: str) -> Worker:
    """Start a worker on `queue` with extra IMAGINGX_* settings; returns once it answers a ping."""
    from app.stack import worker_argv
    from workers.celery_app import app as celery_app

    argv = [
        *worker_argv(concurrency=1, node_name=f"{queue}@%h", queues=queue),
        "--without-gossip",
        "--without-mingle",
    ]
    env = dict(os.environ, IMAGINGX_ALLOW_PRIVATE_SOURCES="true", IMAGINGX_CELERY_QUEUE=queue)
    env.update({f"IMAGINGX_{key.upper()}": value for key, value in settings.items()})
    with log_file.open("ab") as sink:
        process = subprocess.Popen(
            argv, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    worker = Worker(process, queue, log_file)
    result = celery_app.send_task("workers.tasks.ping", queue=queue)
    deadline = time.monotonic() + 90
    while not result.ready():
        if process.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            raise RuntimeError(f"worker on {queue} did not start:\n{worker.log()}")
        time.sleep(0.2)
    return worker


@contextmanager
def queue_for_this_process(queue: str) -> Iterator[None]:
    """Send this process's tasks (the API's `send`) to `queue` for the duration."""
    from app.core.config import get_settings

    previous = os.environ.get("IMAGINGX_CELERY_QUEUE")
    os.environ["IMAGINGX_CELERY_QUEUE"] = queue
    get_settings.cache_clear()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("IMAGINGX_CELERY_QUEUE", None)
        else:
            os.environ["IMAGINGX_CELERY_QUEUE"] = previous
        get_settings.cache_clear()
