"""Importing the seed catalog: merging, variants, flags, idempotence and bad files."""

import json
from pathlib import Path

import pytest
from sqlalchemy import any_, func, select
from sqlalchemy.orm import Session

from app.catalog.importer import SEED_FILE, CatalogFileError, load_rows, plan_import
from app.catalog.models import Dataset
from app.catalog.service import catalog_version, import_catalog


def test_every_raw_row_is_kept(session: Session) -> None:
    rows = json.loads(SEED_FILE.read_text())
    kept = session.execute(select(func.sum(func.jsonb_array_length(Dataset.raw_records)))).scalar_one()
    assert kept == len(rows) == 1151


def test_rows_stating_the_same_facts_are_one_dataset(session: Session) -> None:
    plan = plan_import(load_rows(SEED_FILE))
    assert plan.text_distinct == 1123
    assert len(plan.records) == session.execute(select(func.count(Dataset.id))).scalar_one()
    # AutoPET appears as 'CT/PET' and 'PET/CT' in two survey tables: one dataset, two raw rows
    autopet = session.execute(select(Dataset).where(Dataset.name == "AutoPET")).scalars().all()
    assert len(autopet) == 1
    assert len(autopet[0].raw_records) == 2
    assert sorted(autopet[0].modalities) == ["CT", "PT"]


def test_rows_of_one_dataset_under_one_name_are_one_record_listing_its_parts(session: Session) -> None:
    rows = [r for r in json.loads(SEED_FILE.read_text()) if r["name"].startswith("ImageCLEF 2016")]
    records = session.execute(select(Dataset).where(Dataset.name == "ImageCLEF 2016")).scalars().all()
    assert len(records) == 1
    clef = records[0]
    # every row is kept, '(Duplicate)' included, and each record the rows made before is a part
    assert len(clef.raw_records) == len(rows)
    assert len(clef.parts) == len({p["slug"] for p in clef.parts}) > 1
    assert sum(p["rows"] for p in clef.parts) == len(rows)
    assert clef.variant_group is None and "ImageCLEF 2016 (Duplicate)" in clef.aliases


def test_contradictions_are_flagged(session: Session) -> None:
    med_node = session.execute(select(Dataset).where(Dataset.slug == "med-node")).scalar_one()
    assert (
        "disease_contradicts_anatomy" in med_node.quality_flags
    )  # a skin dataset whose disease says "Brain"
    zero = session.execute(select(Dataset).where(Dataset.images == 0)).scalars().first()
    assert zero is not None and "count_zero" in zero.quality_flags
    unparseable = session.execute(
        select(Dataset).where(any_(Dataset.quality_flags) == "count_unparseable")
    ).scalars()
    assert [d.images for d in unparseable] == [None]


def test_completeness_reflects_known_facts(session: Session) -> None:
    scores = session.execute(select(Dataset.completeness)).scalars().all()
    assert all(0 <= s <= 1 for s in scores)
    assert max(scores) < 1  # licence and organisation are unknown for every seed row


def test_reimport_is_idempotent(session: Session) -> None:
    before = catalog_version(session)
    slugs = set(session.execute(select(Dataset.slug)).scalars())
    summary = import_catalog(session)
    assert (summary.created, summary.updated) == (0, 0)
    assert catalog_version(session) == before
    assert set(session.execute(select(Dataset.slug)).scalars()) == slugs
    lines = summary.as_lines()
    assert any(line.startswith("merged imageclef-2016: ") for line in lines)
    assert f"{summary.redirects} old slugs redirect to the dataset they were merged into" in lines


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not a readable JSON file"),
        ('{"a": 1}', "expected a JSON list"),
        ('[{"name": "x"}]', "lacks"),
        ("[1]", "is not an object"),
    ],
)
def test_bad_catalog_files_fail_clearly_and_change_nothing(
    session: Session, tmp_path: Path, content: str, message: str
) -> None:
    count = session.execute(select(func.count(Dataset.id))).scalar_one()
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(CatalogFileError, match=message):
        import_catalog(session, bad)
    session.rollback()
    assert session.execute(select(func.count(Dataset.id))).scalar_one() == count


def test_a_dataset_gone_from_the_file_is_removed_and_reported(session: Session, tmp_path: Path) -> None:
    rows = [r for r in json.loads(SEED_FILE.read_text()) if r["name"] != "MED-NODE"]
    smaller = tmp_path / "smaller.json"
    smaller.write_text(json.dumps(rows))
    try:
        summary = import_catalog(session, smaller)
        assert summary.removed == 1
        assert session.execute(select(Dataset).where(Dataset.slug == "med-node")).scalar_one_or_none() is None
    finally:
        restored = import_catalog(session)
    assert (restored.created, restored.removed) == (1, 0)
