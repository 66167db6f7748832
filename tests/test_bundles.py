"""Whole bundle jobs: the API, a real Celery worker, Redis, PostgreSQL, and fixture sources over HTTP.

One job over all fixture sources runs once per module (`built`); the tests read its bundle back the way its
users would: nnU-Net's layout rules, mlcroissant, SHA256SUMS, the Hugging Face `datasets` loader.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from bundle_fixtures import SLUGS, ServedSources, served_sources, sources_attached

JOB_TIMEOUT = 240


def wait_for_job(client: Any, job_id: str, timeout: float = JOB_TIMEOUT, until: Any = None) -> dict[str, Any]:
    """Poll the status URL until the job finishes (or `until(status)` holds); fail with the last status."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = client.get(f"/api/v1/bundles/{job_id}").json()
        if until(status) if until else status["state"] in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not get there in {timeout} s: {json.dumps(status)[:3000]}")


@dataclass
class Built:
    status: dict[str, Any]
    archive: bytes
    root: Path  # the bundle, unpacked from the downloaded archive
    served: ServedSources


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedSources]:
    with (
        served_sources(tmp_path_factory.mktemp("sources")) as sources,
        sources_attached(sources.descriptors),
    ):
        yield sources


@pytest.fixture(scope="module")
def built(
    served: ServedSources, celery_worker_process: Any, tmp_path_factory: pytest.TempPathFactory
) -> Built:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app()) as client:
        response = client.post("/api/v1/bundles", json={"datasets": list(SLUGS), "name": "Abdomen fixture"})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        status = wait_for_job(client, job_id)
        assert status["state"] == "done", json.dumps(status, indent=1)
        download = client.get(status["download_url"])
        assert download.status_code == 200
    root = tmp_path_factory.mktemp("downloaded")
    with tarfile.open(fileobj=io.BytesIO(download.content)) as tar:
        tar.extractall(root, filter="data")
    (bundle,) = root.iterdir()
    return Built(status=status, archive=download.content, root=bundle, served=served)


def manifest(built: Built) -> list[dict[str, str]]:
    with (built.root / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


# -- the job as the API reports it ------------------------------------------------------------------------------
def test_job_reports_every_source_with_its_outcome(built: Built) -> None:
    sources = {s["slug"]: s for s in built.status["sources"]}
    assert [s["slug"] for s in built.status["sources"]] == list(SLUGS)
    for slug in ("msd03-liver", "ct-org", "chaos-ct", "ham10000"):
        assert sources[slug]["state"] == "fetched", sources[slug]
    assert sources["msd03-liver"]["layout"] == "msd"
    assert sources["chaos-ct"]["layout"] == "dicom_series"
    assert sources["ham10000"]["layout"] == "class_folders"
    # the malicious archive fails its source with the reason; the job goes on
    assert sources["isic16"]["state"] == "failed"
    assert "outside" in sources["isic16"]["detail"] or ".." in sources["isic16"]["detail"]
    # no automated source: reported with the concrete next step, never faked
    assert sources["lits"]["state"] == "manual"
    assert "No automated source" in sources["lits"]["detail"]
    assert built.status["progress"]["fraction"] == 1.0
    assert built.status["result"]["archive_sha256"] == hashlib.sha256(built.archive).hexdigest()


def test_unreadable_items_are_skipped_with_reasons(built: Built) -> None:
    skipped = {s["item_id"]: s["reason"] for s in built.status["skipped"]}
    assert "msd03-liver_abdomen_099" in skipped  # the truncated volume
    gap = skipped["chaos-ct_patient02-CT"]
    assert "gap" in gap or "spacing" in gap, gap
    # the duplicate is left out at packaging, with the case it duplicates
    assert "same voxels as msd03-liver_abdomen_000" in skipped["ct-org_scan_17"]
    assert not any("/jobs/" in reason for reason in skipped.values()), "reasons name files within the source"


def test_nothing_written_outside_the_job_folder(built: Built, imagingx_home: Path) -> None:
    # every job folder is under the home, and the archive climbs two levels: "escaped.txt" could only land in
    # the home or just beside it (the folders around it are other runs', which come and go meanwhile)
    assert not list(imagingx_home.rglob("escaped.txt"))
    assert not (imagingx_home.parent / "escaped.txt").exists()


# -- reading the bundle back ----------------------------------------------------------------------------------------
def test_sha256sums_cover_every_file(built: Built) -> None:
    lines = (built.root / "SHA256SUMS").read_text().splitlines()
    listed = {}
    for line in lines:
        digest, name = line.split("  ", 1)
        listed[name] = digest
    files = {
        p.relative_to(built.root).as_posix()
        for p in built.root.rglob("*")
        if p.is_file() and p.name != "SHA256SUMS"
    }
    assert set(listed) == files
    for name, digest in listed.items():
        assert hashlib.sha256((built.root / name).read_bytes()).hexdigest() == digest, name


def test_nnunet_layout_rules(built: Built) -> None:
    datasets = sorted((built.root / "nnunet").iterdir())
    # one dataset per modality (the MSD fixture's dataset.json says MRI, the others are CT), numbered from the
    # job's first id with distinct ids
    ids = [int(d.name[len("Dataset") : len("Dataset") + 3]) for d in datasets]
    assert ids == sorted(built.status["result"]["nnunet_ids"]) and len(set(ids)) == len(ids)
    assert ids[0] == built.status["request"]["options"]["nnunet_dataset_id"]
    channels = []
    for dataset in datasets:
        meta = json.loads((dataset / "dataset.json").read_text())
        for key in ("channel_names", "labels", "numTraining", "file_ending"):
            assert key in meta
        channels.append(meta["channel_names"]["0"])
        values = sorted(meta["labels"].values())
        assert values == list(range(len(values))) and meta["labels"]["background"] == 0
        training = sorted((dataset / "imagesTr").glob("*_0000.nii.gz"))
        assert len(training) == meta["numTraining"]
        for image_path in training:
            case = image_path.name.removesuffix("_0000.nii.gz")
            label = nib.load(dataset / "labelsTr" / f"{case}.nii.gz")
            image = nib.load(image_path)
            assert image.shape == label.shape, case
            assert set(np.unique(np.asarray(label.dataobj))) <= set(values)
        splits = json.loads((dataset / "splits_final.json").read_text())
        assert splits and all(set(fold) == {"train", "val"} for fold in splits)
    assert "CT" in channels and len(set(channels)) == len(channels)


def test_duplicate_appears_once_and_labels_unify_by_name(built: Built) -> None:
    rows = manifest(built)
    hashes = [r["content_hash"] for r in rows if r["dims"] == "3"]
    assert len(hashes) == len(set(hashes))
    item_ids = {r["item_id"] for r in rows}
    assert "msd03-liver_abdomen_000" in item_ids and "ct-org_scan_17" not in item_ids  # first source kept
    labels = json.loads((built.root / "labels.json").read_text())
    values = {entry["name"]: entry["value"] for entry in labels["labels"]}
    # MSD says "liver", ct-org says "Hepatic": one concept, one value, both local ids map to it
    assert labels["sources"]["msd03-liver"]["1"] == "liver"
    assert labels["sources"]["ct-org"]["1"] == "liver"
    assert "hepatic" not in values and values["liver"] > 0
    assert sorted(values.values()) == list(range(len(values)))


def test_partial_labels_are_recorded_not_background(built: Built) -> None:
    rows = {r["item_id"]: r for r in manifest(built)}
    ctorg = rows["ct-org_scan_18"]
    assert "liver" in ctorg["annotated_labels"] and "spleen" not in ctorg["annotated_labels"]
    msd = rows["msd03-liver_abdomen_001"]
    assert "liver" in msd["annotated_labels"] and "spleen" in msd["annotated_labels"]
    # the partial source's voxels carry only background and the global liver value
    values = {e["name"]: e["value"] for e in json.loads((built.root / "labels.json").read_text())["labels"]}
    label = np.asarray(nib.load(built.root / ctorg["label_path"]).dataobj)
    assert set(np.unique(label)) == {0, values["liver"]}


def test_official_test_case_stays_test(built: Built) -> None:
    rows = {r["item_id"]: r for r in manifest(built)}
    test_cases = [r for r in rows.values() if r["source_dataset"] == "msd03-liver" and r["split"] == "test"]
    assert test_cases, "MSD's imagesTs case must be in the test split"


def test_croissant_validates(built: Built) -> None:
    import mlcroissant

    dataset = mlcroissant.Dataset(jsonld=str(built.root / "croissant.json"))
    assert dataset.metadata.name


def test_2d_part_loads_with_datasets(built: Built) -> None:
    import datasets

    loaded = datasets.load_dataset("imagefolder", data_dir=str(built.root / "images2d"))
    split = next(iter(loaded.values()))
    assert len(split) > 0
    assert "class_label" in split.column_names


# -- API behaviour ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers, status, part",
    [
        ({"Range": "bytes=100-199"}, 206, slice(100, 200)),
        ({"Range": "bytes=1000-"}, 206, slice(1000, None)),
        ({"Range": "bytes=-300"}, 206, slice(-300, None)),
        ({"Range": "bytes=100-199", "If-Range": "ETAG"}, 206, slice(100, 200)),
        ({"Range": "bytes=100-199", "If-Range": '"another-version"'}, 200, slice(None)),
        ({"Range": "bytes=0-1,5-9"}, 200, slice(None)),  # several ranges: the whole
        ({"Range": "bytes=9-5"}, 200, slice(None)),  # an invalid range: ignored
        ({"Range": "bytes=0-99999999999"}, 206, slice(0, None)),  # past the end: up to the end
        ({"Range": "bytes=99999999999-"}, 416, None),
    ],
)
def test_download_supports_range(
    built: Built, client: Any, headers: dict[str, str], status: int, part: Any
) -> None:
    job_id, size = built.status["id"], len(built.archive)
    etag = f'"{built.status["result"]["archive_sha256"]}"'
    headers = {k: etag if v == "ETAG" else v for k, v in headers.items()}
    response = client.get(f"/api/v1/bundles/{job_id}/download", headers=headers)
    assert response.status_code == status
    assert response.headers["etag"] == etag and response.headers["accept-ranges"] == "bytes"
    if part is None:
        assert response.headers["content-range"] == f"bytes */{size}"
        return
    assert response.content == built.archive[part]
    assert int(response.headers["content-length"]) == len(response.content)
    if status == 206:
        start = part.start % size
        assert (
            response.headers["content-range"] == f"bytes {start}-{start + len(response.content) - 1}/{size}"
        )


def test_bad_requests_get_clear_errors(client: Any) -> None:
    assert client.post("/api/v1/bundles", json={}).status_code == 422
    unknown = client.post("/api/v1/bundles", json={"datasets": ["no-such-dataset"]})
    assert unknown.status_code == 422 and "no-such-dataset" in unknown.json()["error"]
    both = client.post("/api/v1/bundles", json={"datasets": ["lits"], "plan_id": "x"})
    assert both.status_code == 422
    assert client.post("/api/v1/bundles", json={"plan_id": "nope"}).status_code == 404
    bad_option = client.post(
        "/api/v1/bundles", json={"datasets": ["lits"], "options": {"slices_2d": "diagonal"}}
    )
    assert bad_option.status_code == 422
    assert client.get("/api/v1/bundles/not-a-job").status_code == 404
    assert client.get("/api/v1/bundles/" + "x" * 300).status_code in (404, 422)


def test_a_plan_naming_a_dataset_the_catalog_lost_is_refused_by_name(client: Any, monkeypatch) -> None:
    from app.bundles import service

    # a plan saved before a catalog re-import that removed one of its datasets
    monkeypatch.setattr(service, "plan_slugs", lambda session, plan_id: ["lits", "gone-since-the-plan"])
    answer = client.post("/api/v1/bundles", json={"plan_id": "an-old-plan"})
    assert answer.status_code == 422 and "gone-since-the-plan" in answer.json()["error"]


def test_the_servers_default_test_share_is_checked_with_the_request(client: Any, monkeypatch) -> None:
    from app.core.config import get_settings

    monkeypatch.setattr(get_settings(), "bundle_test_fraction", 0.5)
    answer = client.post("/api/v1/bundles", json={"datasets": ["lits"], "options": {"val_fraction": 0.5}})
    assert answer.status_code == 422, answer.text
    assert "0.5" in answer.json()["error"] and "training" in answer.json()["error"]


def test_items_endpoint_pages_every_item(built: Built, client: Any) -> None:
    job_id = built.status["id"]
    first = client.get(f"/api/v1/bundles/{job_id}/items?limit=3").json()
    assert len(first["items"]) == 3 and first["next_url"]
    skipped = client.get(f"/api/v1/bundles/{job_id}/items?state=skipped").json()
    assert all(item["reason"] for item in skipped["items"])


def test_finished_job_cannot_be_cancelled(built: Built, client: Any) -> None:
    response = client.post(f"/api/v1/bundles/{built.status['id']}/cancel")
    assert response.status_code == 409


def test_dataset_pages_say_which_datasets_a_bundle_can_fetch(served: ServedSources, client: Any) -> None:
    assert client.get("/api/v1/datasets/msd03-liver").json()["automated_source"] == "http"
    assert client.get("/api/v1/datasets/lits").json()["automated_source"] is None
    page = client.get("/datasets/msd03-liver", headers={"accept": "text/html"}).text
    assert "Workers fetch it automatically" in page
    manual = client.get("/datasets/lits", headers={"accept": "text/html"}).text
    assert "A fused bundle lists it with the step above" in manual


# -- the bundle's complete account (issue 10) ------------------------------------------------------------------
def _report(built: Built) -> dict[str, Any]:
    return json.loads((built.root / "report.json").read_text())


def test_every_skip_at_every_stage_is_in_the_report_with_stage_and_file(built: Built) -> None:
    report = _report(built)
    skipped = {(s["source"], s["item"]): s for s in report["skipped"]}
    # read: the truncated volume, named by its file within the source
    truncated = skipped[("msd03-liver", "Task98_Abdomen/imagesTr/abdomen_099.nii.gz")]
    assert truncated["stage"] == "read" and truncated["item_id"] == "msd03-liver_abdomen_099"
    # unpack: a label file no case uses (layout detection left it aside)
    orphan = skipped[("msd03-liver", "Task98_Abdomen/labelsTr/abdomen_077.nii.gz")]
    assert orphan["stage"] == "unpack" and "no case" in orphan["reason"]
    # deduplicate: the same voxels as a case already kept
    duplicate = next(s for s in report["skipped"] if s["item_id"] == "ct-org_scan_17")
    assert duplicate["stage"] == "deduplicate" and "same voxels" in duplicate["reason"]
    # read: a DICOM series with a gap
    assert next(s for s in report["skipped"] if s["item_id"] == "chaos-ct_patient02-CT")["stage"] == "read"
    # whole sources: the malicious archive stops at unpacking, the dataset without a source at fetching
    assert skipped[("isic16", "(whole source)")]["stage"] == "unpack"
    assert skipped[("lits", "(whole source)")]["stage"] == "fetch"
    page = (built.root / "report.html").read_text()
    for entry in report["skipped"]:
        assert entry["item"] in page
    with (built.root / "account.csv").open(newline="") as handle:
        account = list(csv.DictReader(handle))
    assert {(r["source"], r["file"], r["stage"]) for r in account if r["outcome"] == "skipped"} == {
        (s["source"], s["item"], s["stage"]) for s in report["skipped"]
    }


def test_counts_agree_across_the_api_the_report_and_the_datacard(built: Built) -> None:
    report = _report(built)
    counts = report["counts"]
    result = built.status["result"]
    api_skipped = built.status["skipped"]
    # the API lists the same items (whole sources are its sources' states) with the same stage and file
    assert len(api_skipped) == result["skipped"] == counts["skipped"]
    assert {(s["source"], s["file"], s["stage"]) for s in api_skipped} == {
        (s["source"], s["item"], s["stage"]) for s in report["skipped"] if s["item"] != "(whole source)"
    }
    assert result["skipped_by_stage"] == counts["skipped_by_stage"]
    assert result["sources_not_fetched"] == counts["sources_not_fetched"] == 2
    assert sum(s["items_skipped"] for s in built.status["sources"]) == counts["skipped"]
    assert result["items"] == counts["items"] == len(manifest(built))
    # the sources table never says "partial" beside zero skipped
    for row in report["sources"]:
        api_row = next((s for s in built.status["sources"] if s["slug"] == row["slug"]), None)
        assert (row["status"] == "partial") == (row["skipped"] > 0), row
        if api_row is not None and row["status"] != "not fetched":
            assert api_row["items_skipped"] == row["skipped"], row["slug"]
    # the datacard states the same numbers
    card = (built.root / "README.md").read_text()
    assert f"{counts['items']} items:" in card
    assert f"- {counts['skipped']} item(s) skipped" in card
    per_source = Counter(r["source_dataset"] for r in manifest(built))
    for slug, items in per_source.items():
        assert re.search(rf"^\| {re.escape(slug)} \| [^|]+ \| {items} \|", card, re.MULTILINE), slug


def test_datacard_states_the_catalog_version_the_job_was_submitted_with(built: Built, session: Any) -> None:
    from app.bundles.models import BundleJob

    job = session.get(BundleJob, built.status["id"])
    assert job is not None and job.catalog_version is not None, "the job records its catalog at submission"
    card = (built.root / "README.md").read_text()
    assert re.search(rf"^- Catalog version: {job.catalog_version}\b", card, re.MULTILINE), card[:2000]
    assert "was not recorded" not in card


def test_datacard_is_covered_by_the_checksums_and_documents_axis_orders(built: Built) -> None:
    card = (built.root / "README.md").read_text()
    sums = (built.root / "SHA256SUMS").read_text()
    assert "  README.md\n" in sums and "  account.csv\n" in sums
    assert "(z, y, x)" in card and "x, y[, z]" in card
    for section in ("## How it was made", "## Labels", "## Loading it", "## Licences", "## How to cite"):
        assert section in card
    assert "nnUNetv2_plan_and_preprocess -d" in card and 'load_dataset("imagefolder"' in card
    labels = json.loads((built.root / "labels.json").read_text())["labels"]
    for entry in labels:  # the datacard's label table is labels.json's, every code included
        row = next(
            line for line in card.splitlines() if line.startswith(f"| {entry['value']} | {entry['name']} |")
        )
        for code in entry["codes"]:
            assert f"{code['scheme']} {code['value']} ({code['meaning']})" in row


def test_source_licences_dois_and_the_portal_url_are_carried(built: Built) -> None:
    licences = (built.root / "LICENSES.md").read_text()
    assert "CC-BY-SA 4.0 (Task98_Abdomen/dataset.json)" in licences  # what MSD's own dataset.json states
    report = _report(built)
    msd = next(s for s in report["sources"] if s["slug"] == "msd03-liver")
    assert "CC-BY-SA 4.0 (Task98_Abdomen/dataset.json)" in msd["stated_licences"]
    bib = (built.root / "CITATION.bib").read_text()
    assert "@article{imagingx_survey" in bib
    croissant = json.loads((built.root / "croissant.json").read_text())
    assert croissant["url"].endswith(f"/bundles/{built.status['id']}") and croissant["url"].startswith("http")
    assert croissant["datePublished"] == built.status["created_at"][:10]
    assert ".invalid" not in json.dumps(croissant)


def test_manifest_axis_orders_match_the_harmonised_files(built: Built) -> None:
    """The harmonised bundle as nibabel reads it: `shape` reversed is nibabel's (x, y, z) shape, `spacing` its
    zooms, and every volume is RAS (as the datacard and docs/bundles.md say)."""
    rows = [r for r in manifest(built) if r["dims"] == "3"]
    assert rows
    for row in rows:
        image = nib.load(built.root / row["image_path"])
        assert list(image.shape[::-1]) == json.loads(row["shape"]), row["item_id"]
        assert list(image.header.get_zooms()) == pytest.approx(json.loads(row["spacing"])), row["item_id"]
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S"), row["item_id"]


def test_harmonisings_account_reaches_the_report(built: Built) -> None:
    """What harmonising records per item (workers/imaging) is in the bundle: where each modality came from per
    source, every alteration with a named kind, and the datacard's altered count is report.json's."""
    from app.common.jobs import AlterationKind

    report = _report(built)
    sources = {row["slug"]: row for row in report["sources"]}
    packaged = Counter(r["source_dataset"] for r in manifest(built) if r["parent_case"] == "")
    for slug in ("msd03-liver", "ct-org", "chaos-ct", "ham10000"):
        assert sum(sources[slug]["modality_from"].values()) == packaged[slug], slug
    assert "dataset.json" in sources["msd03-liver"]["modality_from"]  # MSD's dataset.json names MRI
    assert "dicom" in sources["chaos-ct"]["modality_from"]
    kinds = {kind.value for kind in AlterationKind}
    assert all(entry["kind"] in kinds for entry in report["altered"])
    card = (built.root / "README.md").read_text()
    assert f"- {report['counts']['altered']} item(s) altered beyond the reorientation to RAS" in card


def test_the_job_page_and_cli_show_each_skip_with_its_stage_and_file(built: Built, client: Any) -> None:
    page = client.get(f"/bundles/{built.status['id']}", headers={"Accept": "text/html"}).text
    row = page[page.index('data-item="msd03-liver_abdomen_099"') :]
    row = row[: row.index("</tr>")]
    assert "<td data-stage>read</td>" in row and "Task98_Abdomen/imagesTr/abdomen_099.nii.gz" in row
    result = built.status["result"]
    assert f'data-result="skipped">{result["skipped"]}<' in page
    hint = page[page.index("Left out of the bundle") :]
    assert "by stage: unpack 1, read 2, deduplicate 1" in hint[: hint.index("</p>")], hint[:600]
