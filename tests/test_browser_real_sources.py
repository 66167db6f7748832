"""From the browser, a selection of an IDC-resolved and a Zenodo-resolved catalog dataset builds into one bundle
whose labels come from a DICOM SEG and an RTSTRUCT.

The datasets are the catalog's own (their sources as the resolver gave them); their hosts are loopback stand-ins
(tests/real_source_fixtures.py). A Celery worker of this module's own runs with settings pointing at them, on a
queue of its own, so the session's worker never sees these jobs.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from playwright.sync_api import expect
from real_source_fixtures import LABEL_NAMES, ServedRealSources, served_real_sources

JOB_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRealSources]:
    with served_real_sources(tmp_path_factory.mktemp("real-sources")) as sources:
        yield sources


@pytest.fixture(scope="module")
def source_worker(
    served: ServedRealSources, configured_services: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A worker whose settings point at the loopback hosts, consuming a queue that the web side of this test
    process sends to for the module's duration. Yields its log file."""
    from app.core.config import get_settings
    from app.core.processes import spawn
    from app.stack import reload_settings, worker_argv
    from workers.celery_app import app as celery_app

    previous = os.environ["IMAGINGX_CELERY_QUEUE"]
    queue = f"imagingx-real-sources-{secrets.token_hex(4)}"
    os.environ["IMAGINGX_CELERY_QUEUE"] = queue
    reload_settings()
    log_file = tmp_path_factory.mktemp("real-sources-worker") / "worker.log"
    argv = [
        *worker_argv(concurrency=1, node_name=f"real-{secrets.token_hex(3)}@%h", queues=queue),
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    with log_file.open("ab") as log_handle:
        child = spawn(
            "worker", argv, env=dict(os.environ, **served.env), stdout=log_handle, stderr=subprocess.STDOUT
        )
    try:
        ping = celery_app.send_task("workers.tasks.ping", queue=queue)
        deadline = time.monotonic() + 90
        while not ping.ready():
            assert child.poll() is None and time.monotonic() < deadline, log_file.read_text()[-3000:]
            time.sleep(0.2)
        assert get_settings().celery_queue == queue
        yield log_file
    finally:
        child.stop_signal = signal.SIGTERM
        child.stop()
        os.environ["IMAGINGX_CELERY_QUEUE"] = previous
        reload_settings()


def test_idc_and_zenodo_datasets_build_one_bundle_with_seg_and_rtstruct_labels(
    page: Any, served: ServedRealSources, source_worker: Path, tmp_path: Path
) -> None:
    idc_slug, zenodo_slug = served.slugs
    for slug in served.slugs:
        page.goto(f"/datasets/{slug}")
        expect(page.locator(".fetch-method")).to_contain_text("Automatic")
        toggle = page.locator(f'.selection-toggle[data-slug="{slug}"]')
        toggle.locator("button").click()
        expect(toggle).to_have_class(re.compile(r"\bchosen\b"))

    page.goto("/selection")
    overview = page.locator("#fetch-overview")
    expect(overview).to_contain_text("2 automatic")
    expect(overview.locator("tr.fetch-automatic")).to_have_count(2)
    form = page.locator("#build-bundle")
    form.get_by_label("Name").fill("IDC and Zenodo")
    form.get_by_label("Subjects per dataset").fill("1")
    # the IDC collection's estimate shrinks to one subject's share; the Zenodo record states no size yet
    expect(page.locator("[data-capped-estimate]")).to_contain_text(
        "With at most 1 subject per dataset: about"
    )
    form.get_by_label("Labelled series only").check()
    form.get_by_role("button", name="Build bundle").click()
    expect(page).to_have_url(re.compile(r"/bundles/[\w-]+$"))
    job_id = page.url.rsplit("/", 1)[1]

    status = page.locator("#bundle-status")
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while status.get_attribute("data-state") not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, source_worker.read_text()[-3000:]
        page.wait_for_timeout(300)
    job = page.request.get(f"/api/v1/bundles/{job_id}").json()
    assert job["state"] == "done", (job, source_worker.read_text()[-3000:])
    sources = {s["slug"]: s for s in job["sources"]}
    assert {sources[slug]["state"] for slug in served.slugs} == {"fetched"}, sources
    assert {sources[slug]["layout"] for slug in served.slugs} == {"dicom_objects"}
    assert job["request"]["options"]["max_subjects_per_dataset"] == 1
    assert job["request"]["options"]["labelled_series_only"] is True

    archive = page.request.get(job["download_url"]).body()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp_path, filter="data")
    (bundle,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    if keep := os.environ.get("IMAGINGX_E2E_BUNDLE_DIR"):  # bench/nnunet_check runs nnU-Net's own check on it
        shutil.copytree(bundle, keep, dirs_exist_ok=True)
    (dataset,) = (bundle / "nnunet").iterdir()
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}  # from the DICOM headers
    # one class per name across the SEG and the RTSTRUCT, named as the label unification writes concepts
    labels = meta["labels"]
    concept = {name: name.lower().replace(" ", "_") for name in LABEL_NAMES.values()}
    assert set(labels) == {"background", *concept.values()}
    assert sorted(labels.values()) == list(range(len(labels)))
    assert meta["numTraining"] == 2

    # each case's label map carries exactly the voxels its SEG or RTSTRUCT was drawn from, on the image's grid
    found: dict[str, dict[str, int]] = {}
    for image_path in sorted((dataset / "imagesTr").glob("*_0000.nii.gz")):
        case = image_path.name.removesuffix("_0000.nii.gz")
        label = nib.load(dataset / "labelsTr" / f"{case}.nii.gz")
        assert nib.load(image_path).shape == label.shape
        values = np.asarray(label.dataobj)
        slug = idc_slug if case.startswith(idc_slug) else zenodo_slug
        found[slug] = {name: int((values == labels[concept[name]]).sum()) for name in LABEL_NAMES.values()}
    assert found == served.label_voxels

    # the IDC collection is cited as IDC states it (authors, year, DOI), not by title and URL alone
    import bibtexparser

    entries = {e.key: e for e in bibtexparser.parse_string((bundle / "CITATION.bib").read_text()).entries}
    idc_entry = entries[idc_slug.replace("-", "_")]
    assert idc_entry["doi"].startswith("10.7937/") and idc_entry["year"].isdigit()
    assert " and " in idc_entry["author"] and idc_entry["publisher"] == "The Cancer Imaging Archive"
