"""Job control with real workers: SIGKILL and resume, the running-job limit, the size cap, cancelling.

Each test serves its own fixture archives (a distinct `salt`, so the shared download cache holds none of them
and server delays really happen) and, where it needs other settings or a worker it may kill, starts its own
worker on its own queue.
"""

from __future__ import annotations

import io
import json
import secrets
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bundle_fixtures import queue_for_this_process, served_sources, sources_attached, start_worker
from test_bundles import wait_for_job

KILL_SLUGS = ["msd03-liver", "ct-org", "chaos-ct", "ham10000", "isic16"]


@pytest.fixture
def api(configured_services: None) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app()) as client:
        yield client


def _queue() -> str:
    return f"imagingx-test-job-{secrets.token_hex(4)}"


def _status(api: Any, job_id: str) -> dict[str, Any]:
    return api.get(f"/api/v1/bundles/{job_id}").json()


def test_killed_worker_loses_nothing_and_the_resumed_job_gives_identical_checksums(
    api: Any, tmp_path: Path, celery_worker_process: Any
) -> None:
    queue = _queue()
    delays = {"ham10000": 4.0}  # the worker is inside this download when it is killed
    with (
        served_sources(tmp_path / "sources", delays=delays, salt=queue) as served,
        sources_attached(served.descriptors),
        queue_for_this_process(queue),
    ):
        first = start_worker(queue, tmp_path / "first.log")
        try:
            job = api.post("/api/v1/bundles", json={"datasets": KILL_SLUGS, "name": "Resume check"}).json()

            def mid_download(status: dict[str, Any]) -> bool:
                states = {s["slug"]: s["state"] for s in status["sources"]}
                return states["ham10000"] == "fetching" and states["chaos-ct"] == "fetched"

            wait_for_job(api, job["id"], timeout=120, until=mid_download)
        finally:
            first.kill()
        killed = _status(api, job["id"])
        assert killed["state"] == "fetching"
        fetched_before = {s["slug"] for s in killed["sources"] if s["state"] == "fetched"}
        assert {"msd03-liver", "ct-org", "chaos-ct"} <= fetched_before
        requests_before = {
            slug: len(served.server.requests_to(served.paths[slug])) for slug in fetched_before
        }

        second = start_worker(queue, tmp_path / "second.log")  # resumes unfinished jobs when it starts
        try:
            resumed = wait_for_job(api, job["id"])
            assert resumed["state"] == "done", resumed
            # finished work was kept: no fetched source was downloaded again
            for slug in fetched_before:
                assert len(served.server.requests_to(served.paths[slug])) == requests_before[slug], slug
            requests_after = {
                slug: len(served.server.requests_to(path)) for slug, path in served.paths.items()
            }
            # another owner, so the same nnU-Net ids as the resumed job's (an owner's bundles never share one)
            reference_job = api.post(
                "/api/v1/bundles",
                json={"datasets": KILL_SLUGS, "name": "Resume check"},
                headers={"X-Owner-Key": f"reference-{secrets.token_hex(12)}"},
            ).json()
            reference = wait_for_job(api, reference_job["id"])
            # a second bundle of the same sources downloads nothing: the cache is shared by all jobs
            for slug, path in served.paths.items():
                assert len(served.server.requests_to(path)) == requests_after[slug], slug
        finally:
            second.kill()
    assert reference["state"] == "done", reference
    assert resumed["result"]["nnunet_ids"] == reference["result"]["nnunet_ids"]
    assert resumed["result"]["items"] == reference["result"]["items"] > 0
    # the same bundle but for the page each names (the job's own URL, in the datacard and croissant.json)
    ours, theirs = _files(api, resumed), _files(api, reference)
    assert set(ours) == set(theirs)
    for name in sorted(ours):
        if name not in ("README.md", "croissant.json", "SHA256SUMS"):
            assert ours[name] == theirs[name], name
    assert ours["README.md"] == theirs["README.md"].replace(reference["id"].encode(), resumed["id"].encode())
    ours_croissant, theirs_croissant = (
        json.loads(ours["croissant.json"]),
        json.loads(theirs["croissant.json"]),
    )
    for document in (ours_croissant, theirs_croissant):
        document.pop("url")
        document["distribution"] = [d for d in document["distribution"] if d["@id"] != "README.md"]
    assert ours_croissant == theirs_croissant


def _files(api: Any, status: dict[str, Any]) -> dict[str, bytes]:
    """A finished bundle's files by path, from its download."""
    archive = api.get(status["download_url"]).content
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {
            member.name.split("/", 1)[1]: tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar.getmembers()
            if member.isfile()
        }


def test_jobs_beyond_the_running_limit_wait_in_the_queue(
    api: Any, tmp_path: Path, celery_worker_process: Any
) -> None:
    queue = _queue()
    with (
        served_sources(tmp_path / "sources", delays={"ham10000": 2.0}, salt=queue) as served,
        sources_attached(served.descriptors),
        queue_for_this_process(queue),
    ):
        worker = start_worker(queue, tmp_path / "worker.log", bundle_max_running="1")
        try:
            slow = api.post("/api/v1/bundles", json={"datasets": ["ham10000"]}).json()
            wait_for_job(api, slow["id"], timeout=60, until=lambda s: s["state"] == "fetching")
            waiting = api.post("/api/v1/bundles", json={"datasets": ["ct-org"]}).json()
            time.sleep(1.0)
            assert _status(api, waiting["id"])["state"] == "queued"
            first, second = wait_for_job(api, slow["id"]), wait_for_job(api, waiting["id"])
        finally:
            worker.kill()
    assert first["state"] == second["state"] == "done"
    assert second["started_at"] >= first["finished_at"]


def test_a_job_over_the_size_cap_fails_with_the_reason(
    api: Any, tmp_path: Path, celery_worker_process: Any
) -> None:
    queue = _queue()
    with (
        served_sources(tmp_path / "sources", salt=queue) as served,
        sources_attached(served.descriptors),
        queue_for_this_process(queue),
    ):
        worker = start_worker(queue, tmp_path / "worker.log", bundle_max_bytes="1000")
        try:
            job = api.post("/api/v1/bundles", json={"datasets": ["ct-org"]}).json()
            status = wait_for_job(api, job["id"], timeout=60)
        finally:
            worker.kill()
        assert not served.server.requests_to(served.paths["ct-org"]), "nothing is downloaded past the cap"
    assert status["state"] == "failed"
    assert "IMAGINGX_BUNDLE_MAX_BYTES" in status["error"]
    assert api.get(f"/api/v1/bundles/{job['id']}/download").status_code == 409


def test_cancel_stops_a_running_job(
    api: Any, tmp_path: Path, celery_worker_process: Any, imagingx_home: Path
) -> None:
    with (
        served_sources(tmp_path / "sources", delays={"ham10000": 3.0}, salt=secrets.token_hex(4)) as served,
        sources_attached(served.descriptors),
    ):
        job = api.post("/api/v1/bundles", json={"datasets": ["ham10000", "ct-org"]}).json()
        wait_for_job(api, job["id"], timeout=60, until=lambda s: s["state"] == "fetching")
        cancelled = api.post(f"/api/v1/bundles/{job['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        time.sleep(4.0)  # the download in flight finishes; nothing after it may run
    status = _status(api, job["id"])
    assert status["state"] == "cancelled" and status["result"] is None
    assert status["progress"]["items_finished"] == 0
    assert not (imagingx_home / "jobs" / job["id"]).exists(), "the work folder is removed"
    assert api.post(f"/api/v1/bundles/{job['id']}/cancel").status_code == 409


def test_cancel_ends_a_download_in_flight(
    api: Any, tmp_path: Path, celery_worker_process: Any, imagingx_home: Path
) -> None:
    """A slow host: the source (131 KB) would take ~16 s at 8 KB/s. Cancelling ends the transfer within
    seconds, and the partial file stays in the cache for a later job to resume."""
    with (
        served_sources(tmp_path / "sources", rates={"ct-org": 8_000}, salt=secrets.token_hex(4)) as served,
        sources_attached(served.descriptors),
    ):
        path = served.paths["ct-org"]
        size = len(served.server.routes[path].body)
        assert size > 8_000 * 10, "the fixture is big enough to still be in flight after the cancel"
        job = api.post("/api/v1/bundles", json={"datasets": ["ct-org"]}).json()
        deadline = time.monotonic() + 60
        while not (served.server.requests_to(path) and served.server.requests_to(path)[-1].bytes_sent > 0):
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.1)
        assert api.post(f"/api/v1/bundles/{job['id']}/cancel").status_code == 200
        cancelled_at = time.monotonic()
        while served.server.in_flight:
            assert time.monotonic() - cancelled_at < 6, "the transfer went on after the cancel"
            time.sleep(0.1)
        sent = served.server.requests_to(path)[-1].bytes_sent
    assert sent < size / 2
    partials = list((imagingx_home / "cache" / "partial").glob("*.part"))
    assert any(0 < p.stat().st_size <= sent for p in partials), "the bytes received stay for a resume"
    assert _status(api, job["id"])["state"] == "cancelled"


def test_multi_channel_cases_become_one_nnunet_dataset_with_named_channels(
    api: Any, tmp_path: Path, celery_worker_process: Any
) -> None:
    import csv
    import io
    import json
    import tarfile

    import nibabel as nib

    with (
        served_sources(tmp_path / "sources", salt=secrets.token_hex(4)) as served,
        sources_attached(served.descriptors),
    ):
        job = api.post(
            "/api/v1/bundles", json={"datasets": ["msd01-braintumour"], "name": "Two channels"}
        ).json()
        status = wait_for_job(api, job["id"])
        assert status["state"] == "done", status
        archive = api.get(status["download_url"]).content
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp_path / "out", filter="data")
    (bundle,) = (tmp_path / "out").iterdir()
    (dataset,) = (bundle / "nnunet").iterdir()
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "t1", "1": "t2"}
    labels = sorted((dataset / "labelsTr").glob("*.nii.gz")) + sorted((dataset / "labelsTs").glob("*.nii.gz"))
    assert labels
    for label_path in labels:
        case = label_path.name.removesuffix(".nii.gz")
        images = label_path.parent.parent / label_path.parent.name.replace("labels", "images")
        first, second = images / f"{case}_0000.nii.gz", images / f"{case}_0001.nii.gz"
        assert nib.load(first).shape == nib.load(second).shape == nib.load(label_path).shape
        # the channels are different images (t2 is t1 halved in the fixture), not one written twice
        assert first.read_bytes() != second.read_bytes()
    with (bundle / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(
        r["channels"] == "t1;t2" and r["extra_channel_paths"].endswith("_0001.nii.gz") for r in rows
    )
    sums = (bundle / "SHA256SUMS").read_text()
    assert all(r["extra_channel_paths"] in sums for r in rows)
