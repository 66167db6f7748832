"""README.md at the bundle's root: the datacard a researcher reads before anything else.

It says what the bundle holds (counts per source, modality and split, from the manifest's own records), how
it was made (catalog version, plan, options, software versions: the caller's `provenance`), what every
manifest column means with its axis order, the label table with its codes, how to load the bundle in nnU-Net
v2, MONAI and Hugging Face `datasets`, the licences and how to cite, and what was left out (from the account,
so its numbers are report.json's). Written before croissant.json and SHA256SUMS, which therefore cover it;
it holds no time of its own, so the same inputs give the same bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from workers.packaging.account import ACCOUNT_CSV, EMPTY_SLICES, is_whole_source
from workers.packaging.cases import LabelTable, SourceDataset
from workers.packaging.images2d import IMAGES_DIR, MASKS_DIR
from workers.packaging.labels import labels_document
from workers.packaging.licences import SURVEY_KEY, combined_terms
from workers.packaging.manifest import COLUMN_DESCRIPTIONS, ItemRecord

DATACARD_NAME = "README.md"
ACCOUNT_ROWS_SHOWN = 30  # the datacard lists the first rows of the account; account.csv holds them all
SPLIT_NAMES = ("train", "val", "test")


def _cell(value: object) -> str:
    return " ".join(str(value).split()).replace("|", "\\|") or "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def _split_counts(records: Sequence[ItemRecord]) -> list[int]:
    counts = Counter(r.split for r in records)
    return [counts[s] for s in SPLIT_NAMES]


def _holds(
    records: Sequence[ItemRecord], sources: Sequence[SourceDataset], skipped: Counter[str]
) -> list[str]:
    lines = ["## What it holds", ""]
    three = sum(1 for r in records if r.dims == 3)
    giving = len({r.source_dataset for r in records})
    requested = (
        f" (of {len(sources)} requested: the table says what the others lost)"
        if giving < len(sources)
        else ""
    )
    lines += [
        f"{len(records)} items: {three} 3D cases and {len(records) - three} 2D images or slices, from "
        f"{giving} source dataset(s){requested} and "
        f"{len({r.subject_id for r in records})} subjects. Splits are by subject.",
        "",
        "Per source:",
        "",
    ]
    by_source: dict[str, list[ItemRecord]] = {}
    for record in records:
        by_source.setdefault(record.source_dataset, []).append(record)
    rows = [
        [
            s.slug,
            s.title,
            len(by_source.get(s.slug, [])),
            *_split_counts(by_source.get(s.slug, [])),
            skipped[s.slug],
        ]
        for s in sorted(sources, key=lambda s: s.slug)
    ]
    lines += _table(["source", "title", "items", "train", "val", "test", "skipped"], rows)
    lines += ["Per modality and dimensionality:", ""]
    groups: dict[tuple[str, int], list[ItemRecord]] = {}
    for record in records:
        groups.setdefault((record.modality, record.dims), []).append(record)
    rows = [
        [modality, f"{dims}D", len(items), len({r.subject_id for r in items}), *_split_counts(items)]
        for (modality, dims), items in sorted(groups.items())
    ]
    lines += _table(["modality", "dims", "items", "subjects", "train", "val", "test"], rows)
    return lines


def catalog_lines(provenance: Mapping[str, Any]) -> list[str]:
    """Which catalog the bundle follows: the version at packaging, the version the job was submitted with
    (`catalog_version_submitted`, when the job recorded it) and the plan's (`plan_catalog_version`), each said
    apart when it differs, since a job's sources are fixed at submission while packaging reads the catalog
    later (a re-import between the two changes nothing in the bundle but the datacard's figures)."""
    now = provenance.get("catalog_version")
    submitted = provenance.get("catalog_version_submitted")
    lines: list[str] = []
    if submitted not in (None, "") and now not in (None, "") and submitted != now:
        lines.append(
            f"- Catalog version: {submitted} when the job was submitted (its sources were fixed then), {now} "
            "when it was packaged"
        )
    elif submitted not in (None, ""):
        lines.append(f"- Catalog version: {submitted} (at submission and at packaging)")
    elif now not in (None, ""):
        lines.append(f"- Catalog version: {now} at packaging (the version at submission was not recorded)")
    plan = provenance.get("plan_id")
    if plan:
        made = provenance.get("plan_catalog_version")
        text = f"- Plan: {plan}"
        if made not in (None, ""):
            text += f", made at catalog version {made}"
            if now not in (None, "") and made != now:
                text += " (its dataset list is the one the plan saved; the catalog has changed since)"
        lines.append(text)
    return lines


def _made(provenance: Mapping[str, Any], version: str, url: str) -> list[str]:
    lines = ["## How it was made", ""]
    lines += [f"- Bundle version {version}; its page: {url or '-'}"]
    lines += catalog_lines(provenance)
    options = provenance.get("options")
    if options:
        lines += ["- Options:", "", "```json", json.dumps(options, indent=2, sort_keys=True), "```", ""]
    software = provenance.get("software") or {}
    if software:
        lines.append("- Software: " + ", ".join(f"{k} {v}" for k, v in sorted(software.items())))
    lines += [
        "- Every 3D case was reoriented to RAS (the closest canonical orientation: axes permuted and flipped, "
        "never interpolated); native spacing and raw intensities are kept; labels were unified by name.",
        "",
    ]
    return lines


def _found(source_rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """How harmonising read each source: where modalities and 2D subjects came from, names no vocabulary knew."""
    lines = []
    for row in source_rows:
        parts: list[str] = []
        for key, what in (("modality_from", "modality from"), ("subject_from", "subjects from")):
            if row.get(key):
                parts.append(what + " " + ", ".join(f"{k} ({n})" for k, n in sorted(row[key].items())))
        if row.get("unknown_labels"):
            parts.append("label names kept as written: " + ", ".join(row["unknown_labels"]))
        if parts:
            lines.append(f"- {row['slug']}: " + "; ".join(parts))
    return ["How each source was read:", "", *lines, ""] if lines else []


def _files(nnunet_folders: Mapping[str, str], nnunet_ids: Mapping[str, int]) -> list[str]:
    lines = ["## Files", ""]
    for channel, folder in sorted(nnunet_folders.items()):
        lines.append(f"- `{folder}/`: nnU-Net v2 raw dataset {nnunet_ids[channel]} (channels {channel})")
    lines += [
        f"- `{IMAGES_DIR}/`, `{MASKS_DIR}/`: 2D pictures as PNG (float slices with fractions as 32-bit float "
        "TIFF) in `train/`, `validation/`, `test/` with a `metadata.parquet` each: a Hugging Face imagefolder "
        "whose `class_label` is a ClassLabel (present only when the bundle has 2D items); a 2D item's mask is `<split>/<item_id>.png` "
        "under the second folder (the manifest's `label_path`)",
        "- `manifest.parquet`, `manifest.csv`: one row per item (columns below)",
        f"- `{ACCOUNT_CSV}`: the complete account: every item skipped or altered, with the stage, the file "
        "relative to its source and the reason",
        "- `labels.json`: the label table with codes and each source's local ids",
        "- `LICENSES.md`, `CITATION.bib`, `report.json`, `report.html`, `croissant.json` (MLCommons Croissant)",
        "- `SHA256SUMS`: every file's sha256 (check with `sha256sum -c SHA256SUMS`)",
        "",
    ]
    return lines


def _columns() -> list[str]:
    lines = ["## Manifest columns and axis orders", ""]
    lines += [
        "`spacing` lists index axes fastest first (x, y, z, as NIfTI and ITK); `shape` lists array axes slowest "
        "first ((z, y, x), as numpy and SimpleITK's GetArrayFromImage). nibabel's `img.shape` is (x, y, z).",
        "",
    ]
    return lines + _table(
        ["column", "what it holds"], [[f"`{k}`", v] for k, v in COLUMN_DESCRIPTIONS.items()]
    )


def _labels(labels: LabelTable) -> list[str]:
    """The label table as labels.json states it (the same document, workers/packaging/labels.py): every code
    with its scheme, the laterality modifier and anatomic region where there is one, and whether the
    vocabulary knew the name (an unknown name is the source's, kept as written)."""
    lines = ["## Labels", ""]
    lines += [
        "One integer per concept in every label map (0 is background). A label not in an item's "
        "`annotated_labels` is unknown in that item, not background. labels.json holds the same table and each "
        "source's own ids.",
        "",
    ]
    rows = []
    for entry in labels_document(labels)["labels"]:
        codes = "; ".join(f"{c['scheme']} {c['value']} ({c['meaning']})" for c in entry["codes"])
        side = (entry.get("laterality") or {}).get("meaning", "")
        region = (entry.get("region") or {}).get("meaning", "")
        known = (
            "" if entry["name"] == "background" else ("yes" if entry.get("known") else "no: kept as written")
        )
        rows.append([entry["value"], entry["name"], codes, side, region, known])
    return lines + _table(["value", "name", "codes", "laterality", "region", "in the vocabulary"], rows)


def _loading(
    nnunet_folders: Mapping[str, str],
    nnunet_ids: Mapping[str, int],
    has_2d: bool,
    volume_modalities: Sequence[str],
) -> list[str]:
    """How to load the bundle; `volume_modalities`: the modalities of the labelled 3D items, most items first
    (the MONAI recipe takes one of them: CT and MR intensities are not on one scale)."""
    lines = ["## Loading it", ""]
    if nnunet_folders:
        ids = " ".join(str(nnunet_ids[c]) for c in sorted(nnunet_folders))
        first = nnunet_ids[sorted(nnunet_folders)[0]]
        lines += [
            "nnU-Net v2 (splits_final.json holds the bundle's subject-level split):",
            "",
            "```sh",
            'export nnUNet_raw="$PWD/nnunet" nnUNet_preprocessed="$PWD/preprocessed" nnUNet_results="$PWD/results"',
            f"nnUNetv2_plan_and_preprocess -d {ids} --verify_dataset_integrity",
            f"nnUNetv2_train {first} 3d_fullres 0",
            "```",
            "",
            "MONAI (paths from the manifest):",
            "",
            "```python",
            "import pandas as pd",
            "from monai.data import Dataset",
            "from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged",
            'm = pd.read_parquet("manifest.parquet")',
            *(
                [f"# one modality at a time (this bundle also holds {', '.join(volume_modalities[1:])})"]
                if len(volume_modalities) > 1
                else []
            ),
            'rows = m[(m.dims == 3) & (m.split == "train") & (m.label_path != "")'
            + (f' & (m.modality == "{volume_modalities[0]}")]' if volume_modalities else "]"),
            'files = [{"image": i, "label": l} for i, l in zip(rows.image_path, rows.label_path)]',
            'keys = ["image", "label"]',
            "data = Dataset(files, Compose([LoadImaged(keys), EnsureChannelFirstd(keys)]))",
            "```",
            "",
        ]
    if has_2d:
        lines += [
            "Hugging Face `datasets` (the 2D part):",
            "",
            "```python",
            "from datasets import load_dataset",
            'ds = load_dataset("imagefolder", data_dir="images2d")',
            'classes = ds["train"].features["class_label"]  # a ClassLabel: classes.int2str(i) names class i',
            "# -1 marks an item without a class (a slice of a volume): keep the classified pictures with",
            'pictures = ds.filter(lambda row: row["class_label"] >= 0)',
            "```",
            "",
        ]
    return lines


def _licences(sources: Sequence[SourceDataset]) -> list[str]:
    lines = ["## Licences", ""]
    lines += [f"- {statement}" for statement in combined_terms(list(sources)).statements()]
    lines.append("")
    rows = [
        [s.slug, s.licence, "; ".join(f"{lic} ({where})" for lic, where in s.stated_licences)]
        for s in sorted(sources, key=lambda s: s.slug)
    ]
    lines += _table(["source", "licence (catalog)", "stated by the source"], rows)
    lines += ["LICENSES.md has the details.", ""]
    return lines


def _cite(sources: Sequence[SourceDataset]) -> list[str]:
    lines = ["## How to cite", ""]
    lines += [
        "Cite every source (CITATION.bib has one entry each, with authors, year and DOI where the source states "
        f"them) and the survey whose catalog chose them (`{SURVEY_KEY}`).",
        "",
    ]
    lines += [
        f"- {s.title}" + (f", doi:{s.doi}" if s.doi else "") for s in sorted(sources, key=lambda s: s.slug)
    ]
    return [*lines, ""]


def _left_out(account: Sequence[dict[str, str]], counts: Mapping[str, Any]) -> list[str]:
    lines = ["## What was left out or changed", ""]
    by_stage = ", ".join(f"{stage}: {n}" for stage, n in counts["skipped_by_stage"].items()) or "none"
    kinds = ", ".join(f"{kind}: {n}" for kind, n in counts["alterations_by_kind"].items()) or "none"
    lines += [
        f"- {counts['skipped']} item(s) skipped (by stage: {by_stage})",
        f"- {counts['sources_not_fetched']} source(s) not fetched",
        f"- {counts['altered']} item(s) altered beyond the reorientation to RAS ({kinds})",
    ]
    if counts.get("empty_slices_left_out"):
        cases = sum(1 for r in account if r["kind"] == EMPTY_SLICES)
        lines.append(
            f"- {counts['empty_slices_left_out']} 2D slice(s) without a labelled voxel left out of "
            f"{cases} case(s) (option `skip_empty_slices`; a note per case below and in `{ACCOUNT_CSV}`)"
        )
    lines.append("")
    shown = list(account[:ACCOUNT_ROWS_SHOWN])
    if shown:
        rows = [
            [
                r["source"],
                r["stage"],
                "source not fetched" if is_whole_source(r) else f"{r['outcome']} {r['kind']}".strip(),
                r["file"],
                r["reason"],
            ]
            for r in shown
        ]
        lines += _table(["source", "stage", "outcome", "file", "reason"], rows)
        if len(account) > len(shown):
            lines += [f"{len(account) - len(shown)} more row(s) in `{ACCOUNT_CSV}`.", ""]
    return lines


def datacard_markdown(
    *,
    name: str,
    description: str,
    version: str,
    url: str,
    provenance: Mapping[str, Any],
    records: Sequence[ItemRecord],
    sources: Sequence[SourceDataset],
    labels: LabelTable,
    account: Sequence[dict[str, str]],
    counts: Mapping[str, Any],
    skipped_per_source: Counter[str],
    nnunet_folders: Mapping[str, str],
    nnunet_ids: Mapping[str, int],
    source_rows: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The datacard's text; `nnunet_folders` / `nnunet_ids` only for the nnU-Net datasets actually written;
    `source_rows`: report.json's `sources`."""
    lines = [f"# {name}", "", description, ""]
    lines += _holds(records, sources, skipped_per_source)
    lines += _made(provenance, version, url)
    lines += _found(source_rows)
    lines += _files(nnunet_folders, nnunet_ids)
    lines += _columns()
    lines += _labels(labels)
    labelled_volumes = Counter(r.modality for r in records if r.dims == 3 and r.label_path)
    lines += _loading(
        nnunet_folders,
        nnunet_ids,
        any(r.dims == 2 for r in records),
        [modality for modality, _ in labelled_volumes.most_common()],
    )
    lines += _licences(sources)
    lines += _cite(sources)
    lines += _left_out(account, counts)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_datacard(text: str, root: Path) -> None:
    (root / DATACARD_NAME).write_text(text, encoding="utf-8")
