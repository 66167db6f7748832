"""One bundle built the way a researcher asks for it, read back by every consumer it promises.

The job runs through the API and a real Celery worker over fixture sources made of real scans on 127.0.0.1: an
MSD archive (msd03-liver), a DICOM series with its label file (chaos-ct, one patient's series with a gap), a
2D class-folder set (ham10000), and an NCI Imaging Data Commons collection whose CT series carries a DICOM SEG
(pancreas-ct), with `slices_2d` on. The archive is downloaded and unpacked, then read as its datacard says:
nnU-Net v2's raw-dataset rules, the manifest and account with pandas, MONAI-style dictionaries of the manifest's
paths (nibabel, which MONAI's LoadImaged uses for NIfTI), mlcroissant's records, Hugging Face `datasets` with a
ClassLabel, and the datacard's own figures against what the files hold.

Set IMAGINGX_READBACK_KEEP to a folder to keep the unpacked bundle (to run nnU-Net's own check on it, or open
report.html in a browser).
"""

from __future__ import annotations

import csv
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
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from bundle_fixtures import served_sources, sources_attached
from real_source_fixtures import IDC_SLUG, LABEL_NAMES, ServedRealSources, served_real_sources

HTTP_SLUGS = ("msd03-liver", "chaos-ct", "ham10000")
# the IDC CT and chaos-ct's first series are the same scan (pydicom's CT5N): the IDC one, with its SEG, comes
# first so that it is kept and chaos-ct's copy is the duplicate left out
SLUGS = (IDC_SLUG, *HTTP_SLUGS)
JOB_TIMEOUT_S = 300
NNUNET_CASE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii\.gz$")


@dataclass
class Readback:
    status: dict[str, Any]
    root: Path  # the unpacked bundle


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRealSources]:
    with served_real_sources(tmp_path_factory.mktemp("real")) as served:
        yield served


@pytest.fixture(scope="module")
def worker_queue(
    real: ServedRealSources, configured_services: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A worker whose settings reach the IDC fixture, on a queue this process sends to; yields its log."""
    from app.core.processes import spawn
    from app.stack import reload_settings, worker_argv
    from workers.celery_app import app as celery_app

    previous = os.environ["IMAGINGX_CELERY_QUEUE"]
    queue = f"imagingx-readback-{secrets.token_hex(4)}"
    os.environ["IMAGINGX_CELERY_QUEUE"] = queue
    reload_settings()
    log_file = tmp_path_factory.mktemp("readback-worker") / "worker.log"
    argv = [
        *worker_argv(concurrency=1, node_name=f"readback-{secrets.token_hex(3)}@%h", queues=queue),
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    with log_file.open("ab") as sink:
        child = spawn("worker", argv, env=dict(os.environ, **real.env), stdout=sink, stderr=subprocess.STDOUT)
    try:
        ping = celery_app.send_task("workers.tasks.ping", queue=queue)
        deadline = time.monotonic() + 90
        while not ping.ready():
            assert child.poll() is None and time.monotonic() < deadline, log_file.read_text()[-3000:]
            time.sleep(0.2)
        yield log_file
    finally:
        child.stop_signal = signal.SIGTERM
        child.stop()
        os.environ["IMAGINGX_CELERY_QUEUE"] = previous
        reload_settings()


@pytest.fixture(scope="module")
def bundle(worker_queue: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Readback]:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with (
        served_sources(tmp_path_factory.mktemp("sources")) as served,
        sources_attached({slug: served.descriptors[slug] for slug in HTTP_SLUGS}),
        TestClient(create_app()) as client,
    ):
        request = {"datasets": list(SLUGS), "name": "Readback trial", "options": {"slices_2d": "axial"}}
        response = client.post("/api/v1/bundles", json=request)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        deadline = time.monotonic() + JOB_TIMEOUT_S
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = client.get(f"/api/v1/bundles/{job_id}").json()
            if status["state"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.5)
        assert status.get("state") == "done", (json.dumps(status)[:3000], worker_queue.read_text()[-3000:])
        archive = client.get(status["download_url"]).content
    root = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    (folder,) = root.iterdir()
    if keep := os.environ.get("IMAGINGX_READBACK_KEEP"):
        shutil.copytree(folder, keep, dirs_exist_ok=True)
    yield Readback(status, folder)


def _pandas() -> Any:
    return pytest.importorskip("pandas")


def _report(bundle: Readback) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((bundle.root / "report.json").read_text())
    return document


# -- nnU-Net v2's raw-dataset rules ------------------------------------------------------------------------------
def test_every_nnunet_dataset_follows_the_raw_dataset_rules(bundle: Readback) -> None:
    datasets = sorted((bundle.root / "nnunet").iterdir())
    assert datasets
    with (bundle.root / "manifest.csv").open(newline="") as handle:
        subjects = {row["item_id"]: row["subject_id"] for row in csv.DictReader(handle)}
    ids = [int(d.name[len("Dataset") : len("Dataset") + 3]) for d in datasets]
    assert len(set(ids)) == len(ids) and all(1 <= i <= 999 for i in ids)
    for dataset in datasets:
        assert re.fullmatch(r"Dataset\d{3}_[A-Za-z0-9_\-]+", dataset.name), dataset.name
        meta = json.loads((dataset / "dataset.json").read_text())
        channels = {int(k): v for k, v in meta["channel_names"].items()}
        assert sorted(channels) == list(range(len(channels)))
        labels = meta["labels"]
        assert labels["background"] == 0
        assert sorted(labels.values()) == list(range(len(labels)))  # consecutive, as nnU-Net requires
        assert meta["file_ending"] == ".nii.gz"
        by_case: dict[str, set[int]] = {}
        for image in (dataset / "imagesTr").iterdir():
            match = NNUNET_CASE.match(image.name)
            assert match, image.name
            by_case.setdefault(match["case"], set()).add(int(match["channel"]))
        assert len(by_case) == meta["numTraining"]
        assert all(found == set(channels) for found in by_case.values())
        labelled = {p.name.removesuffix(".nii.gz") for p in (dataset / "labelsTr").iterdir()}
        assert labelled == set(by_case)
        for case in by_case:
            image = nib.load(dataset / "imagesTr" / f"{case}_0000.nii.gz")
            label = nib.load(dataset / "labelsTr" / f"{case}.nii.gz")
            assert image.shape == label.shape and np.allclose(image.affine, label.affine, atol=1e-4), case
            assert set(np.unique(np.asarray(label.dataobj)).tolist()) <= set(labels.values()), case
        folds = json.loads((dataset / "splits_final.json").read_text())
        for fold in folds:
            assert fold["train"] and fold["val"]  # nnU-Net trains nothing from an empty side
            assert set(fold["train"]) | set(fold["val"]) <= set(by_case)
            if fold["train"] == fold["val"]:  # only with one subject: nnU-Net's fold `all`
                assert len({subjects[case] for case in by_case}) == 1
            else:
                assert not {subjects[c] for c in fold["train"]} & {subjects[c] for c in fold["val"]}


# -- the manifest and the account, with pandas -------------------------------------------------------------------
def test_manifest_and_account_agree_with_the_report_and_the_api(bundle: Readback) -> None:
    pd = _pandas()
    manifest = pd.read_parquet(bundle.root / "manifest.parquet")
    from_csv = pd.read_csv(bundle.root / "manifest.csv", keep_default_na=False)
    assert len(manifest) == len(from_csv)
    account = pd.read_csv(bundle.root / "account.csv", keep_default_na=False)
    report = _report(bundle)
    counts = report["counts"]
    assert counts["items"] == len(manifest) == bundle.status["result"]["items"]
    skipped = account[(account.outcome == "skipped") & (account.file != "(whole source)")]
    assert counts["skipped"] == len(skipped)
    assert counts["noted"] == int((account.outcome == "noted").sum())
    # every skip the API lists is in the bundle's account, with its stage
    in_account = {(r.item_id, r.stage) for r in skipped.itertuples()}
    for item in bundle.status["skipped"]:
        assert (item["item_id"], item["stage"]) in in_account, item
    # the series with a gap is one of them, read back from the archive alone
    assert any("gap" in reason or "spacing" in reason for reason in skipped.reason)
    # 2D slices of every sliced 3D case: written plus left out as empty is the whole volume
    slices = manifest[manifest.parent_case.fillna("") != ""]
    assert len(slices) > 0
    notes = account[account.kind == "empty_slices"]
    assert counts["empty_slices_left_out"] == sum(int(r.split()[0]) for r in notes.reason)
    for note in notes.itertuples():
        written = int((slices.parent_case == note.item_id).sum())
        left_out, total = (int(n) for n in re.match(r"(\d+) of (\d+)", note.reason).groups())  # type: ignore[union-attr]
        assert written + left_out == total, note


def test_2d_subjects_and_splits_hold_together(bundle: Readback) -> None:
    pd = _pandas()
    manifest = pd.read_parquet(bundle.root / "manifest.parquet")
    two_d = manifest[manifest.dims == 2]
    per_subject = two_d.groupby(["source_dataset", "subject_id"]).split.nunique()
    assert (per_subject == 1).all(), per_subject[per_subject > 1]
    # a slice keeps its volume's subject and split
    volumes = manifest[manifest.dims == 3].set_index("item_id")
    for row in two_d[two_d.parent_case.fillna("") != ""].itertuples():
        parent = volumes.loc[row.parent_case]
        assert (row.subject_id, row.split) == (parent.subject_id, parent.split)


# -- MONAI's dictionaries, as the datacard writes them -------------------------------------------------------------
def test_the_datacards_monai_recipe_loads_every_labelled_training_volume(bundle: Readback) -> None:
    """The datacard's recipe selects rows; each selected dictionary must load (MONAI's LoadImaged reads NIfTI
    with nibabel) with an image and label on one grid. MONAI itself runs when it is installed."""
    pd = _pandas()
    card = (bundle.root / "README.md").read_text()
    recipe = card.split("MONAI", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert "LoadImaged" in recipe
    selection = "\n".join(line for line in recipe.splitlines() if not re.search(r"monai|Dataset\(", line))
    scope: dict[str, Any] = {"pd": pd}
    cwd = Path.cwd()
    os.chdir(bundle.root)  # the recipe's paths are relative to the bundle, as the datacard says
    try:
        exec(selection, scope)
        files = scope["files"]
        assert files
        assert scope["rows"].modality.nunique() == 1, (
            "one modality at a time: CT and MR intensities do not mix"
        )
        for entry in files:
            image, label = nib.load(entry["image"]), nib.load(entry["label"])
            assert image.shape == label.shape
        try:
            import monai  # noqa: F401
        except ImportError:
            return
        exec(recipe, scope)
        first = scope["data"][0]
        assert first["image"].shape == first["label"].shape
    finally:
        os.chdir(cwd)


# -- mlcroissant ------------------------------------------------------------------------------------------------
def test_every_croissant_record_set_reads(bundle: Readback) -> None:
    mlcroissant = pytest.importorskip("mlcroissant")
    dataset = mlcroissant.Dataset(jsonld=bundle.root / "croissant.json")
    assert not dataset.metadata.ctx.issues.errors, dataset.metadata.ctx.issues.report()
    document = json.loads((bundle.root / "croissant.json").read_text())
    assert document["url"].startswith("http") and document["datePublished"]
    total = 0
    for record_set in document["recordSet"]:
        records = list(dataset.records(record_set["@id"]))
        assert records, record_set["@id"]
        total += len(records)
    assert total >= _report(bundle)["counts"]["items"]


# -- Hugging Face datasets --------------------------------------------------------------------------------------
def test_the_2d_part_loads_with_a_class_label_feature(bundle: Readback) -> None:
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(bundle.root / "images2d"))
    card = (bundle.root / "README.md").read_text()
    recipe = card.split("Hugging Face `datasets`", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec(recipe.replace('data_dir="images2d"', f"data_dir={str(bundle.root / 'images2d')!r}"), scope)
    classes = set()
    for split in scope["pictures"].values():
        feature = split.features["class_label"]
        assert isinstance(feature, datasets.ClassLabel)
        classes |= {feature.int2str(v) for v in split["class_label"]}
        assert all(image.size[0] > 0 for image in split.select(range(min(3, len(split))))["image"])
    assert classes == {"lower", "upper"}  # ham10000's folders; slices of volumes have none
    pd = _pandas()
    manifest = pd.read_parquet(bundle.root / "manifest.parquet")
    two_d = manifest[manifest.dims == 2]
    assert sum(len(split) for split in loaded.values()) == len(two_d)
    classified = two_d[two_d.class_label.fillna("") != ""]
    assert sum(len(split) for split in scope["pictures"].values()) == len(classified)
    # every 2D mask the manifest names exists where the datacard says masks are
    for path in two_d.label_path.dropna():
        if path:
            assert path.startswith("images2d_masks/") and (bundle.root / path).is_file(), path
    assert "`images2d_masks/`" in card


# -- the datacard and report.html, as a person reads them ----------------------------------------------------------
def test_the_datacard_states_what_the_files_hold(bundle: Readback) -> None:
    pd = _pandas()
    card = (bundle.root / "README.md").read_text()
    manifest = pd.read_parquet(bundle.root / "manifest.parquet")
    counts = _report(bundle)["counts"]
    assert f"- {counts['skipped']} item(s) skipped" in card
    assert "Catalog version:" in card
    # four sources were asked for; chaos-ct's only usable series duplicates the IDC one, so three give items
    assert f"from {manifest.source_dataset.nunique()} source dataset(s) (of 4 requested" in card
    for slug, items in Counter(manifest.source_dataset).items():
        assert re.search(rf"\|\s*{re.escape(slug)}\s*\|[^|\n]*\|\s*{items}\s*\|", card), (slug, items)
    for axes in ("(x, y, z)", "(z, y, x)"):
        assert axes in card
    html = (bundle.root / "report.html").read_text()
    assert "gap" in html or "spacing" in html  # the skipped series is in the report a person opens


def test_the_seg_labels_reach_the_idc_case_voxel_for_voxel(bundle: Readback, real: ServedRealSources) -> None:
    pd = _pandas()
    manifest = pd.read_parquet(bundle.root / "manifest.parquet")
    (row,) = manifest[(manifest.source_dataset == IDC_SLUG) & (manifest.dims == 3)].itertuples()
    values = {e["name"]: e["value"] for e in json.loads((bundle.root / "labels.json").read_text())["labels"]}
    label = np.asarray(nib.load(bundle.root / row.label_path).dataobj)
    found = {
        name: int((label == values[name.lower().replace(" ", "_")]).sum()) for name in LABEL_NAMES.values()
    }
    assert found == real.label_voxels[IDC_SLUG]
    assert row.modality == "CT"  # from the DICOM header


def test_a_source_that_gave_no_item_says_where_its_items_went(bundle: Readback) -> None:
    sources = {row["slug"]: row for row in _report(bundle)["sources"]}
    chaos = sources["chaos-ct"]
    assert chaos["items"] == 0 and chaos["skipped"] == 2
    # its gap series was unreadable and its other series the IDC scan again: both stages named
    assert chaos["detail"] == "no item packaged (read 1, deduplicate 1): see the account"
