"""The normalised catalog against a hand-checked gold file (tests/gold/normalisation.json): every check names a
dataset by one of its raw names, a field and the values a person reading the raw rows expects. The accuracy
must not fall below the recorded figure; raise the figure when the importer gets better."""

import json
from functools import cache
from pathlib import Path
from typing import Any

from app.catalog.importer import SEED_FILE, load_rows, plan_import
from app.catalog.normalise import clean_text

GOLD = Path(__file__).parent / "gold" / "normalisation.json"
# The accuracy measured when the gold file was written (checks right / checks); the test fails below it
RECORDED_ACCURACY = 0.994  # 181 of 182 when written (the miss: VerSe19 "Lab" read as segmentation only)
FIELDS = {"modalities", "anatomies", "tasks", "diseases"}


@cache
def records_by_raw_name() -> dict[str, dict[str, Any]]:
    plan = plan_import(load_rows(SEED_FILE))
    found: dict[str, dict[str, Any]] = {}
    for record in plan.records:
        for raw in record.values["raw_records"]:
            found.setdefault(clean_text(raw["name"]), record.values)
    return found


def checks() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(GOLD.read_text(encoding="utf-8"))["checks"]
    return data


def misses() -> list[str]:
    records = records_by_raw_name()
    wrong = []
    for check in checks():
        got = records[check["dataset"]][check["field"]]
        if {v.lower() for v in got} != {v.lower() for v in check["expected"]}:
            wrong.append(f"{check['dataset']} {check['field']}: expected {check['expected']}, got {got}")
    return wrong


def test_the_gold_file_is_well_formed() -> None:
    records = records_by_raw_name()
    seen = set()
    for check in checks():
        assert check["dataset"] in records, check
        assert check["field"] in FIELDS, check
        assert isinstance(check["expected"], list), check
        assert (check["dataset"], check["field"]) not in seen, check
        seen.add((check["dataset"], check["field"]))
    assert len(seen) >= 150


def test_accuracy_over_the_gold_file_holds() -> None:
    wrong = misses()
    accuracy = 1 - len(wrong) / len(checks())
    print(f"gold accuracy {accuracy:.3f} ({len(checks()) - len(wrong)} of {len(checks())}); misses: {wrong}")
    assert accuracy >= RECORDED_ACCURACY, wrong
