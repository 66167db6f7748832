"""The bundle's complete account and its datacard, built from the packaging fixtures (small real volumes from
nibabel's test data, tests/test_packaging.py) with a loss at every stage and harmonising's notes on the cases:
every loss is in report.json, report.html, account.csv and the datacard with its stage and file, and the
numbers agree with a count made here from the inputs and the manifest."""

from __future__ import annotations

import csv
import html
import json
import random
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from test_packaging import LABELS, SOURCES, SPEC, make_cases

from workers.packaging import SkippedItem, build_bundle
from workers.packaging.cases import HarmonisedCase

EARLIER = [
    SkippedItem("ct-organs-nc", "(whole source)", "failed: HTTP 503", stage="fetch"),
    SkippedItem(
        "ct-liver-demo",
        "extra/orphan_seg.nii.gz",
        "no case uses this file",
        "unpack",
        "ct-liver-demo/unused/x",
    ),
    SkippedItem("ct-liver-demo", "imagesTr/case_7.nii.gz", "truncated gzip", "read", "ct_007"),
    SkippedItem("mr-brain-demo", "sub-01/anat/scout.dcm", "a localizer", "read", "mr_009"),
    SkippedItem(
        "mr-brain-demo",
        "sub-02/anat/T1w.nii.gz",
        "label grid differs from the image's",
        "harmonise",
        "mr_010",
    ),
]


def noted_cases() -> list[HarmonisedCase]:
    """The packaging fixtures, with what harmonising says about some of them."""
    cases = make_cases()
    by_id = {case.case_id: case for case in cases}
    by_id["ct_000"].alterations = (("resampled", "label resampled from 1.5 mm to the image's 1.0 mm grid"),)
    by_id["ct_000"].modality_from = "dataset.json"
    by_id["ct_001"].alterations = (
        ("cast", "float64 stored as int16 (integer-valued)"),
        ("relabelled", "Hepatic -> liver"),
    )
    by_id["mr_000"].modality_disagreement = "the DICOM header says MR, the catalog says CT"
    by_id["mr_000"].unknown_labels = ("blob",)
    for case in cases:
        if case.dims == 2:
            case.subject_from = "file name pattern"
    return cases


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("account")
    build_bundle(
        iter(noted_cases()), sources=SOURCES, labels=LABELS, dest=root / "b", spec=SPEC, skipped=EARLIER
    )
    return root / "b"


def _manifest(bundle: Path) -> list[dict[str, str]]:
    with (bundle / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _account(bundle: Path) -> list[dict[str, str]]:
    with (bundle / "account.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_earlier_loss_is_in_the_account_with_its_stage_and_file(built: Path) -> None:
    report = json.loads((built / "report.json").read_text())
    listed = {(s["source"], s["item"], s["stage"], s["reason"]) for s in report["skipped"]}
    for item in EARLIER:
        assert (item.source, item.item, item.stage, item.reason) in listed
    account = {(r["source"], r["file"], r["stage"]) for r in _account(built) if r["outcome"] == "skipped"}
    assert {(s, i, st) for s, i, st, _ in listed} == account
    page = (built / "report.html").read_text()
    for item in EARLIER:
        assert item.item in page and html.escape(item.reason) in page


def test_counts_are_what_a_brute_force_count_of_the_losses_gives(built: Path) -> None:
    report = json.loads((built / "report.json").read_text())
    rows = _account(built)
    skipped = [r for r in rows if r["outcome"] == "skipped" and r["file"] != "(whole source)"]
    expected_by_stage = Counter(r["stage"] for r in skipped)
    counts = report["counts"]
    assert counts["skipped"] == len(skipped) == len(EARLIER) - 1 + 3  # + three refused while packaging
    assert counts["skipped_by_stage"] == dict(expected_by_stage)
    assert counts["skipped_by_stage"]["deduplicate"] == 1 and counts["skipped_by_stage"]["read"] == 2
    assert counts["sources_not_fetched"] == 1
    assert counts["items"] == len(_manifest(built)) == report["items"]
    # per source: the table's `skipped` is the account's, and "partial" only ever beside a non-zero count
    per_source = Counter(r["source"] for r in skipped)
    for row in report["sources"]:
        assert row["skipped"] == per_source[row["slug"]]
        assert (row["status"] == "partial") == (row["skipped"] > 0 and row["items"] > 0)


def test_alterations_and_notes_reach_the_report_and_the_account(built: Path) -> None:
    report = json.loads((built / "report.json").read_text())
    altered = {(a["item_id"], a["kind"]) for a in report["altered"]}
    assert altered == {("ct_000", "resampled"), ("ct_001", "cast"), ("ct_001", "relabelled")}
    assert report["counts"]["altered"] == 2 and report["counts"]["alterations_by_kind"] == {
        "cast": 1,
        "relabelled": 1,
        "resampled": 1,
    }
    assert [(n["item_id"], n["kind"]) for n in report["noted"]] == [("mr_000", "modality")]
    sources = {row["slug"]: row for row in report["sources"]}
    assert sources["ct-liver-demo"]["modality_from"] == {"dataset.json": 1}
    assert sources["mr-brain-demo"]["unknown_labels"] == ["blob"]
    assert sum(sources["mr-brain-demo"]["subject_from"].values()) == sum(
        1 for r in _manifest(built) if r["source_dataset"] == "mr-brain-demo" and r["dims"] == "2"
    )
    outcomes = Counter(r["outcome"] for r in _account(built))
    assert outcomes == {"skipped": len(report["skipped"]), "altered": 3, "noted": 1}


def test_the_datacard_states_the_true_counts(built: Path) -> None:
    card = (built / "README.md").read_text()
    manifest = _manifest(built)
    report = json.loads((built / "report.json").read_text())
    assert f"{len(manifest)} items: {sum(1 for r in manifest if r['dims'] == '3')} 3D cases" in card
    for source in SOURCES:
        rows = [r for r in manifest if r["source_dataset"] == source.slug]
        splits = [sum(1 for r in rows if r["split"] == s) for s in ("train", "val", "test")]
        skipped = next(s["skipped"] for s in report["sources"] if s["slug"] == source.slug)
        line = f"| {source.slug} | {source.title} | {len(rows)} | {splits[0]} | {splits[1]} | {splits[2]} | {skipped} |"
        assert line in card
    for (modality, dims), n in Counter((r["modality"], r["dims"]) for r in manifest).items():
        assert re.search(rf"^\| {modality} \| {dims}D \| {n} \|", card, re.MULTILINE)
    assert f"- {report['counts']['skipped']} item(s) skipped (by stage: " in card
    assert (
        "- 2 item(s) altered beyond the reorientation to RAS (cast: 1, relabelled: 1, resampled: 1)" in card
    )
    assert "| 1 | liver | SCT 10200004 (Liver); UBERON UBERON:0002107 (Liver) | - | - | yes |" in card
    assert "nnUNetv2_plan_and_preprocess -d 501 502" in card
    sums = (built / "SHA256SUMS").read_text()
    assert "  README.md\n" in sums and "  account.csv\n" in sums


def test_the_account_and_datacard_are_byte_reproducible(built: Path, tmp_path: Path) -> None:
    cases = noted_cases()
    random.Random(7).shuffle(cases)
    cases.sort(key=lambda c: c.case_id == "ct_dup")  # the same copy of the duplicate arrives first, as before
    earlier = list(reversed(EARLIER))
    build_bundle(
        iter(cases), sources=SOURCES, labels=LABELS, dest=tmp_path / "again", spec=SPEC, skipped=earlier
    )
    for name in ("README.md", "account.csv", "report.json", "report.html", "croissant.json", "SHA256SUMS"):
        assert (tmp_path / "again" / name).read_bytes() == (built / name).read_bytes(), name


def test_chosen_nnunet_ids_name_the_folders(tmp_path: Path) -> None:
    spec = replace(SPEC, dataset_ids=(742, 615))
    build_bundle(iter(make_cases()), sources=SOURCES, labels=LABELS, dest=tmp_path / "b", spec=spec)
    names = sorted(p.name for p in (tmp_path / "b" / "nnunet").iterdir())
    assert names == ["Dataset615_LiverFusionDemoMr", "Dataset742_LiverFusionDemoCt"]
    assert "nnUNetv2_plan_and_preprocess -d 742 615" in (tmp_path / "b" / "README.md").read_text()
    with pytest.raises(ValueError, match="distinct dataset ids"):
        build_bundle(
            iter(make_cases()),
            sources=SOURCES,
            labels=LABELS,
            dest=tmp_path / "c",
            spec=replace(SPEC, dataset_ids=(742, 742)),
        )
    assert not (tmp_path / "c").exists()


def test_licences_a_source_states_in_its_files_are_read_as_written(tmp_path: Path) -> None:
    from imaging_fixtures import build_msd_source

    from workers.packaging.source_terms import stated_licences

    root = build_msd_source(tmp_path / "src")
    task = root / "Task98_Abdomen"
    meta = json.loads((task / "dataset.json").read_text())
    (task / "dataset.json").write_text(json.dumps({**meta, "licence": "CC-BY-SA 4.0"}))
    (root / "LICENSE.txt").write_text("\n  Attribution 4.0 International  \n\nmore text\n")
    (task / "imagesTr" / "LICENSE").write_text("deeper than the root's first levels is still read\n")
    assert stated_licences(root) == [
        {"licence": "Attribution 4.0 International", "from": "LICENSE.txt"},
        {"licence": "CC-BY-SA 4.0", "from": "Task98_Abdomen/dataset.json"},
        {
            "licence": "deeper than the root's first levels is still read",
            "from": "Task98_Abdomen/imagesTr/LICENSE",
        },
    ]
    (task / "dataset.json").write_text(json.dumps(meta))
    (root / "LICENSE.txt").unlink()
    (task / "imagesTr" / "LICENSE").unlink()
    assert stated_licences(root) == []  # nothing stated: nothing invented


def test_files_no_case_uses_are_found_and_used_ones_are_not(tmp_path: Path) -> None:
    from imaging_fixtures import build_msd_source

    from workers.imaging.layout import detect_layout
    from workers.pipeline.fetch import unused_files

    root = build_msd_source(tmp_path / "src")
    task = root / "Task98_Abdomen"
    (task / "labelsTr" / "abdomen_077.nii.gz").write_bytes(
        (task / "labelsTr" / "abdomen_000.nii.gz").read_bytes()
    )
    (task / "imagesTr" / "._abdomen_000.nii.gz").write_bytes(b"macOS resource fork")
    (task / "notes.txt").write_text("not an image")
    layout = detect_layout(root)
    unused = [p.relative_to(root).as_posix() for p in unused_files(root, layout.cases)]
    assert unused == ["Task98_Abdomen/labelsTr/abdomen_077.nii.gz"]
    # brute force: every image file is either used by a case or listed
    used = {p.resolve() for c in layout.cases for p in (*c.images, *((c.label,) if c.label else ()))}
    images = {p.resolve() for p in root.rglob("*.nii.gz") if not p.name.startswith(".")}
    assert images == used | {(root / u).resolve() for u in unused}


def test_axis_orders_are_what_the_files_say_and_documented_everywhere(built: Path) -> None:
    """`spacing` is (x, y, z) and `shape` (z, y, x): checked on every 3D file with nibabel (whose shape and
    zooms are both in (x, y, z) order), then the same statement found in the datacard, croissant.json, the
    API schema and docs/bundles.md."""
    import nibabel as nib

    from app.bundles.schemas import BundleResult
    from workers.packaging.manifest import COLUMN_DESCRIPTIONS

    rows = [r for r in _manifest(built) if r["dims"] == "3"]
    assert rows
    for row in rows:
        image = nib.load(built / row["image_path"])
        assert list(image.shape[::-1]) == json.loads(row["shape"])
        assert list(image.header.get_zooms()) == pytest.approx(json.loads(row["spacing"]))
    card = (built / "README.md").read_text()
    croissant = json.loads((built / "croissant.json").read_text())
    fields = {f["name"]: f["description"] for f in croissant["recordSet"][0]["field"]}
    for column, description in COLUMN_DESCRIPTIONS.items():
        assert f"| `{column}` | {description} |" in card
        assert fields[column] == description
    schema = BundleResult.model_json_schema()["description"]
    docs = (Path(__file__).resolve().parents[1] / "docs" / "bundles.md").read_text()
    for text in (schema, docs):
        assert "(x, y, z)" in text and "(z, y, x)" in text


def test_every_file_set_is_in_croissant_and_every_record_set_reads(tmp_path: Path) -> None:
    """Slices of a float volume with fractions are TIFFs: croissant.json gives them a file set of their own
    beside the PNGs' and the volumes'; the file sets together hold every image and label of the manifest, and
    every record set mlcroissant is offered can be read."""
    mlcroissant = pytest.importorskip("mlcroissant")
    cases = make_cases()
    ct = next(c for c in cases if c.case_id == "ct_000")
    assert ct.image is not None
    floats = replace(ct, case_id="ct_float", image=ct.image.astype("float32") / 7, content_hash="float-copy")
    build_bundle(
        iter([*cases, floats]),
        sources=SOURCES,
        labels=LABELS,
        dest=tmp_path / "b",
        spec=replace(SPEC, slice_axis=0),
    )
    document = json.loads((tmp_path / "b" / "croissant.json").read_text())
    sets = {d["@id"]: d for d in document["distribution"] if d["@type"] == "cr:FileSet"}
    assert sets["images2d-tiff"]["includes"] == "images2d/*/*.tiff"
    tiffs = sorted((tmp_path / "b" / "images2d").glob("*/*.tiff"))
    assert tiffs
    dataset = mlcroissant.Dataset(jsonld=tmp_path / "b" / "croissant.json")
    assert not dataset.metadata.ctx.issues.errors, dataset.metadata.ctx.issues.report()
    manifest = _manifest(tmp_path / "b")
    listed = {p for r in manifest for p in (r["image_path"], r["label_path"]) if p}
    covered = {
        p.relative_to(tmp_path / "b").as_posix()
        for s in sets.values()
        for p in (tmp_path / "b").glob(s["includes"])
    }
    assert listed == covered
    pictures = {p for p in listed if p.endswith(".png")}
    for record_set in document["recordSet"][1:]:
        records = list(dataset.records(record_set["@id"]))
        assert records and all(r[f"{record_set['@id']}/image"] is not None for r in records)
        pictures -= {
            Path(r[f"{record_set['@id']}/path"].decode()).relative_to(tmp_path / "b").as_posix()
            for r in records
        }
    assert not pictures  # every PNG is a record of its file set


def test_the_datacard_says_how_each_source_was_read(built: Path) -> None:
    card = (built / "README.md").read_text()
    two_d = sum(1 for r in _manifest(built) if r["source_dataset"] == "mr-brain-demo" and r["dims"] == "2")
    assert "- ct-liver-demo: modality from dataset.json (1)" in card
    assert (
        f"- mr-brain-demo: subjects from file name pattern ({two_d}); label names kept as written: blob"
        in card
    )


def test_a_bids_description_states_licence_authors_and_doi(tmp_path: Path) -> None:
    from imaging_fixtures import build_bids_source

    from workers.packaging.source_terms import stated_citation, stated_licences

    root = build_bids_source(tmp_path / "bids")
    description = {
        "Name": "Demo",
        "BIDSVersion": "1.8.0",
        "License": "CC0",
        "Authors": ["Jane Doe", "Richard  Roe"],
        "DatasetDOI": "https://doi.org/10.18112/openneuro.ds000001.v1.0.0",
    }
    (root / "dataset_description.json").write_text(json.dumps(description))
    assert {"licence": "CC0", "from": "dataset_description.json"} in stated_licences(root)
    assert stated_citation(root) == {
        "authors": "Jane Doe and Richard Roe",
        "doi": "10.18112/openneuro.ds000001.v1.0.0",
    }
    (root / "dataset_description.json").write_text(json.dumps({"Name": "Demo", "BIDSVersion": "1.8.0"}))
    assert stated_citation(root) == {}


def test_slices_left_out_as_empty_are_counted_per_case(tmp_path: Path) -> None:
    """With `skip_empty_slices` (the default), each sliced case's account has one note with the number of
    slices it lost, and that number is what a count over its label finds; the report and the datacard give
    the total, and written + left out is every slice of the volume."""
    cases = [
        c
        for c in make_cases()
        if c.dims == 3 and c.label is not None and c.case_id not in ("ct_dup", "ct_badlabel")
    ]
    # the fixtures' labels touch every slice: clear some slices of two cases (a different count each)
    for case, cleared in zip(cases[:2], ([0, 1, 2, 9], [5]), strict=True):
        assert case.label is not None
        label = case.label.copy()
        label[cleared] = 0
        case.label = label
    dest = tmp_path / "b"
    build_bundle(iter(cases), sources=SOURCES, labels=LABELS, dest=dest, spec=replace(SPEC, slice_axis=0))
    notes = {r["item_id"]: r for r in _account(dest) if r["kind"] == "empty_slices"}
    written = Counter(r["parent_case"] for r in _manifest(dest) if r["dims"] == "2")
    expected_total = 0
    for case in cases:
        assert case.label is not None and case.image is not None
        empty = sum(1 for index in range(case.label.shape[0]) if not case.label[index].any())
        expected_total += empty
        assert written[case.case_id] == case.image.shape[0] - empty
        if not empty:
            assert case.case_id not in notes
            continue
        row = notes[case.case_id]
        assert (row["outcome"], row["stage"]) == ("noted", "package")
        assert row["reason"].startswith(f"{empty} of {case.image.shape[0]} axial slices left out")
    assert expected_total > 0  # the fixtures have empty slices, or this test shows nothing
    report = json.loads((dest / "report.json").read_text())
    assert report["counts"]["empty_slices_left_out"] == expected_total
    assert report["counts"]["noted"] == len(notes)
    card = (dest / "README.md").read_text()
    assert f"- {expected_total} 2D slice(s) without a labelled voxel left out of {len(notes)} case(s)" in card


def test_the_datacard_states_the_catalog_version_at_submission_and_packaging_when_they_differ() -> None:
    from workers.packaging.datacard import catalog_lines

    assert catalog_lines({"catalog_version": 7}) == [
        "- Catalog version: 7 at packaging (the version at submission was not recorded)"
    ]
    assert catalog_lines({"catalog_version": 7, "catalog_version_submitted": 7}) == [
        "- Catalog version: 7 (at submission and at packaging)"
    ]
    differ = catalog_lines({"catalog_version": 9, "catalog_version_submitted": 7})
    assert differ == [
        "- Catalog version: 7 when the job was submitted (its sources were fixed then), 9 when it was packaged"
    ]
    planned = catalog_lines({"catalog_version": 9, "plan_id": "P1", "plan_catalog_version": 4})
    assert planned[1] == (
        "- Plan: P1, made at catalog version 4 (its dataset list is the one the plan saved; the catalog has "
        "changed since)"
    )
    assert catalog_lines({"catalog_version": 4, "plan_id": "P1", "plan_catalog_version": 4})[1] == (
        "- Plan: P1, made at catalog version 4"
    )
