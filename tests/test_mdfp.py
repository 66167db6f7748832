"""The MDFP planner: the four phases on a small hand-made catalog (expected tables computed by hand), spec
validation, the API round trip, the preset over the seed catalog, the pages and the CLI."""

import html as html_module
import json
import random
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from app.mdfp.cli import plan as plan_command
from app.mdfp.phases import alignment, blueprint, harmonisation, indexing, plan_phases, table_rows
from app.mdfp.presets import SURVEY_PRESET, get_preset, load_presets
from app.mdfp.rules import evaluate
from app.mdfp.schemas import PlanSpec
from app.mdfp.snapshot import PlanningSnapshot


# -- a catalog small enough to compute every table by hand --------------------------------------------------
def dataset(
    id: int, slug: str, modalities: list[str], tasks: list[str], dims: list[str], **facts: Any
) -> Any:
    values = {
        "labeled": True,
        "images": 100,
        "year": 2020,
        "access": "open",
        "licence": None,
        "organisation": None,
        "anatomy_closure": [],
        "raw_records": [{}],
        "quality_flags": [],
    }
    values.update(facts)
    return SimpleNamespace(
        id=id,
        slug=slug,
        name=slug.replace("-", " ").title(),
        modalities=modalities,
        tasks=tasks,
        dims=dims,
        **values,
    )


LIVER = ["liver", "abdomen", "whole_body"]
BRAIN = ["brain", "head", "head_and_neck", "whole_body"]
RECORDS = [
    dataset(1, "ct-seg-big", ["CT"], ["segmentation"], ["3D"], images=1000, organisation="Org A", anatomy_closure=LIVER),
    dataset(2, "ct-cls-2d", ["CT"], ["classification"], ["2D"], images=500, access="registration",
            licence="CC-BY-4.0", organisation="Org B", year=2019),
    dataset(3, "ct-small", ["CT"], ["segmentation"], ["2D"], images=50, year=2021),
    dataset(4, "ct-recon", ["CT"], ["reconstruction"], ["3D"], labeled=False, images=300, year=2018),
    dataset(5, "mr-seg", ["MR"], ["segmentation"], ["3D"], images=800, organisation="Org A", year=2022,
            anatomy_closure=BRAIN, raw_records=[{}, {}]),
    dataset(6, "mr-unlab", ["MR"], ["classification"], ["2D"], labeled=False, images=2000, year=2017),
    dataset(7, "ct-mr-multi", ["CT", "MR"], ["detection"], ["2D"], images=None),
    dataset(8, "fundus-cls", ["FUNDUS"], ["classification"], ["2D"], images=400, access="registration",
            organisation="Org C", year=2015),
    dataset(9, "fundus-video", ["FUNDUS"], ["classification"], ["video"], year=2016),
    dataset(10, "xr-cls", ["XR"], ["classification"], ["2D"], images=10000),
    dataset(11, "ct-mr-both", ["CT", "MR"], ["segmentation"], ["3D"], images=600, organisation="Org B", year=2023),
]  # fmt: skip

SURVEY_LIKE = {
    "goal": "2D foundation model",
    "target_modalities": ["ct", "MRI", "fundus photo"],
    "target_task_types": ["cls", "Segmentation", "detection", "regression"],
    "target_dims": ["2d"],
    "allow_3d_as_2d_sources": True,
    "min_valid_images_per_dataset": 100,
}


@pytest.fixture(scope="module")
def snapshot() -> PlanningSnapshot:
    return PlanningSnapshot.from_records(7, RECORDS)


def spec(**changes: Any) -> PlanSpec:
    return PlanSpec.model_validate({**SURVEY_LIKE, **changes})


def table(phase: dict[str, Any], table_id: str) -> dict[str, Any]:
    """A phase's table with its rows as objects (the long lists store arrays of `fields`)."""
    found = next(t for t in phase["tables"] if t["id"] == table_id)
    return {**found, "rows": table_rows(found)}


def column(rows: list[dict[str, Any]], *keys: str) -> list[tuple[Any, ...]]:
    return [tuple(row[k] for k in keys) for row in rows]


# -- the spec ---------------------------------------------------------------------------------------------------
def test_spec_stores_synonyms_canonical_in_vocabulary_order() -> None:
    parsed = spec(licence_allowlist=["cc by", "UNKNOWN"], access_allowlist=[], anatomy_whitelist=["Chest"])
    assert parsed.target_modalities == ["CT", "MR", "FUNDUS"]
    assert parsed.target_task_types == ["segmentation", "classification", "detection", "regression"]
    assert parsed.target_dims == ["2D"]
    assert parsed.licence_allowlist == ["CC-BY-4.0", "unknown"]
    assert parsed.access_allowlist is None  # an empty allowlist means "any", like null
    assert parsed.anatomy_whitelist == ["thorax"]
    assert spec(target_modalities=["MR", "mri", "CT"]).target_modalities == ["CT", "MR"]


def test_spec_errors_point_at_the_offending_field() -> None:
    with pytest.raises(ValidationError) as caught:
        PlanSpec.model_validate(
            {
                "target_modalities": ["CT", "Xray2"],
                "min_valid_images_per_dataset": -1,
                "selection": {"max_datasets": 0, "typo": 1},
                "colour": "blue",
            }
        )
    errors = {tuple(e["loc"]): e["msg"] for e in caught.value.errors()}
    assert "allowed values: CT, MR" in errors[("target_modalities", 1)]
    assert "'Xray2'" in errors[("target_modalities", 1)]
    assert ("min_valid_images_per_dataset",) in errors
    assert ("selection", "max_datasets") in errors
    assert errors[("selection", "typo")] == "Extra inputs are not permitted"
    assert errors[("colour",)] == "Extra inputs are not permitted"


def test_every_preset_is_a_valid_spec_and_the_survey_example_comes_first() -> None:
    presets = load_presets()
    assert presets[0].id == SURVEY_PRESET
    survey = get_preset(SURVEY_PRESET).spec
    assert survey.target_modalities == ["CT", "MR", "FUNDUS"]
    assert set(survey.target_task_types) == {"classification", "segmentation", "detection", "regression"}
    assert survey.min_valid_images_per_dataset == 100
    assert survey.target_dims == ["2D"] and survey.allow_3d_as_2d_sources


# -- the phases on the hand-made catalog ---------------------------------------------------------------------------
def test_harmonisation_shows_the_whole_landscape(snapshot: PlanningSnapshot) -> None:
    phase = harmonisation(snapshot, spec())
    landscape = table(phase, "landscape")["rows"]
    assert column(landscape, "modality", "datasets", "labeled", "unlabeled", "labels_unknown", "target") == [
        ("CT", 6, 5, 1, 0, True),
        ("MR", 4, 3, 1, 0, True),
        ("XR", 1, 1, 0, 0, False),
        ("FUNDUS", 2, 2, 0, 0, True),
    ]
    families = table(phase, "families")["rows"]
    assert column(families, "family", "datasets", "labeled", "unlabeled") == [
        ("cross_sectional", 8, 6, 2),
        ("projection", 1, 1, 0),
        ("ophthalmic", 2, 2, 0),
    ]
    facts = {f["label"]: f["value"] for f in phase["facts"]}
    assert facts["Datasets in the catalog"] == 11
    assert facts["Survey rows they were built from"] == 12
    assert facts["Datasets merged from duplicate rows"] == 1
    assert facts["Organisation unknown"] == 6
    assert facts["Image count unknown"] == 1
    stacked = next(c for c in phase["charts"] if c["id"] == "landscape")
    assert stacked["kind"] == "stacked_bar"
    assert stacked["categories"] == ["CT ★", "MR ★", "X-ray radiography", "Fundus photography ★"]
    assert [s["values"] for s in stacked["series"]] == [[5, 3, 1, 2], [1, 1, 0, 0], [0, 0, 0, 0]]


def test_alignment_keeps_candidates_with_a_target_task_and_dimensionality(snapshot: PlanningSnapshot) -> None:
    phase = alignment(snapshot, spec())
    facts = {f["label"]: f["value"] for f in phase["facts"]}
    assert facts["Candidates (a target modality)"] == 10  # every dataset but the X-ray one
    assert facts["Aligned"] == 8
    assert facts["Rejected: no target task type"] == 1  # ct-recon
    assert facts["Rejected: dimensionality not targeted"] == 1  # fundus-video
    assert facts["Aligned only as 3D volumes for a 2D goal"] == 3  # ct-seg-big, mr-seg, ct-mr-both
    assert column(table(phase, "tasks")["rows"], "task", "candidates", "aligned", "target") == [
        ("segmentation", 4, 4, True),
        ("classification", 4, 3, True),
        ("detection", 1, 1, True),
        ("reconstruction", 1, 0, False),
    ]
    matrix = table(phase, "tasks_by_modality")["rows"]
    assert column(
        matrix, "modality", "aligned", "segmentation", "classification", "detection", "regression"
    ) == [
        ("CT", 5, 3, 1, 1, 0),
        ("MR", 4, 2, 1, 1, 0),
        ("FUNDUS", 1, 0, 1, 0, 0),
    ]
    assert column(table(phase, "dims")["rows"], "dim", "candidates", "aligned", "role") == [
        ("2D", 5, 5, "target"),
        ("3D", 4, 3, "3D as 2D source"),
        ("video", 1, 0, "not targeted"),
    ]
    assert column(table(phase, "labels")["rows"], "modality", "aligned", "labeled", "unlabeled") == [
        ("CT", 5, 5, 0),
        ("MR", 4, 3, 1),
        ("FUNDUS", 1, 1, 0),
    ]


def test_without_3d_sources_volumes_are_rejected_by_dimensionality(snapshot: PlanningSnapshot) -> None:
    ev = evaluate(snapshot, spec(allow_3d_as_2d_sources=False))
    rejected = {snapshot.slugs[p] for p in range(snapshot.size) if ev.first_rule[p] == 1}
    assert rejected == {"ct-seg-big", "mr-seg", "ct-mr-both", "fundus-video"}


def test_blueprint_and_indexing_give_the_hand_computed_summary(snapshot: PlanningSnapshot) -> None:
    ev = evaluate(snapshot, spec())
    phase3 = blueprint(snapshot, spec(), ev)
    rules = {r["rule"]: (r["rejected"], r["failing"]) for r in table(phase3, "rules")["rows"]}
    assert rules["min_valid_images_per_dataset"] == (2, 2)  # ct-small (50) and ct-mr-multi (unknown)
    assert rules["licence_allowlist"] == (0, 0)

    phase4 = indexing(snapshot, spec(), ev)
    summary = table(phase4, "summary")["rows"]
    keys = ("modality", "n_datasets", "sum_images", "n_orgs", "orgs_unknown", "labeled_ratio", "shared")
    assert column(summary, *keys) == [
        ("CT", 3, 2100, 2, 0, 1.0, 1),  # ct-seg-big 1000, ct-cls-2d 500, ct-mr-both 600; Org A, Org B
        (
            "MR",
            3,
            3400,
            2,
            1,
            0.66667,
            1,
        ),  # mr-seg 800, mr-unlab 2000, ct-mr-both 600; mr-unlab's org unknown
        ("FUNDUS", 1, 400, 1, 0, 1.0, 0),
        ("total", 6, 5300, 3, 1, 0.83333, 0),  # each dataset once
    ]
    final = table(phase4, "final")["rows"]
    # labeled first, then more images; the unlabeled dataset comes last despite the largest count
    assert [r["slug"] for r in final] == [
        "ct-seg-big", "mr-seg", "ct-mr-both", "ct-cls-2d", "fundus-cls", "mr-unlab",
    ]  # fmt: skip
    assert column(final[:1], "modalities", "tasks", "images", "labeled") == [
        (["CT"], ["segmentation"], 1000, True)
    ]
    assert final[0]["why"] == "3D volumes as a 2D source; labeled; ≥ 100 images"
    assert final[-1]["why"] == "2D; unlabeled (allowed); ≥ 100 images"
    rejected = table(phase4, "rejected")["rows"]
    assert column(rejected, "slug", "rule", "reason") == [
        ("ct-recon", "target_task_types", "task types Reconstruction are not targeted"),
        ("fundus-video", "target_dims", "Video not targeted"),
        ("ct-mr-multi", "min_valid_images_per_dataset", "image count unknown"),
        ("ct-small", "min_valid_images_per_dataset", "50 images < 100"),
    ]
    phases_of_rules = {r["rule"]: r["phase"] for r in table(phase3, "rules")["rows"]}
    assert phases_of_rules["target_dims"] == "alignment"
    assert phases_of_rules["min_valid_images_per_dataset"] == "blueprint"


def test_selection_drops_thin_modalities_and_reports_unknown_organisations(
    snapshot: PlanningSnapshot,
) -> None:
    selection = {
        "enable": True,
        "min_datasets_per_modality": 2,
        "min_orgs_per_modality": 3,
        "max_datasets": 2,
    }
    ev = evaluate(snapshot, spec(selection=selection))
    phase3 = blueprint(snapshot, spec(selection=selection), ev)
    checks = column(
        table(phase3, "constraints")["rows"], "modality", "eligible", "orgs_known", "orgs_unknown", "status"
    )
    # CT: 2 known organisations, none unknown: short of 3. MR: 2 known + 1 unknown could be 3: unverified.
    assert checks == [
        ("CT", 3, 2, 0, "dropped"),
        ("MR", 3, 2, 1, "unverified"),
        ("FUNDUS", 1, 1, 0, "dropped"),
    ]
    phase4 = indexing(snapshot, spec(selection=selection), ev)
    assert [r["slug"] for r in table(phase4, "final")["rows"]] == ["mr-seg", "ct-mr-both"]
    rejected = {r["slug"]: (r["rule"], r["reason"]) for r in table(phase4, "rejected")["rows"]}
    assert rejected["fundus-cls"][0] == "selection.min_datasets_per_modality"
    assert rejected["ct-seg-big"][0] == "selection.min_orgs_per_modality"
    assert rejected["ct-cls-2d"][0] == "selection.min_orgs_per_modality"
    assert rejected["mr-unlab"] == (
        "selection.max_datasets",
        "ranked #6, beyond the cap of 2 datasets",
    )
    assert "ct-mr-both" not in rejected  # its CT was dropped, its MR kept it


def test_total_image_cap_is_filled_greedily_in_rank_order(snapshot: PlanningSnapshot) -> None:
    selection = {"enable": True, "max_total_images": 1500}
    chosen = spec(prefer_labeled=False, selection=selection)
    phases, _summary, slugs = plan_phases(snapshot, chosen)
    # by images: mr-unlab 2000 (over), ct-seg-big 1000, mr-seg 800 (over), ct-mr-both 600 (over), ct-cls-2d 500
    assert slugs == ["ct-seg-big", "ct-cls-2d"]
    rejected = {r["slug"]: r["reason"] for r in table(phases[3], "rejected")["rows"]}
    assert rejected["mr-unlab"] == "2,000 images would exceed the cap of 1,500 in total"
    assert rejected["fundus-cls"] == "400 images would exceed the cap of 1,500 in total"


def test_unknown_licence_is_not_assumed_to_be_allowed(snapshot: PlanningSnapshot) -> None:
    phases, _, slugs = plan_phases(snapshot, spec(licence_allowlist=["cc-by"]))
    assert slugs == ["ct-cls-2d"]
    rejected = {r["slug"]: r for r in table(phases[3], "rejected")["rows"]}
    assert rejected["mr-seg"]["reason"] == "licence unknown: not assumed to be allowed"
    assert rejected["ct-small"]["rule"] == "licence_allowlist"
    assert rejected["ct-small"]["also"] == ["min_valid_images_per_dataset"]
    _, _, with_unknown = plan_phases(snapshot, spec(licence_allowlist=["CC BY 4.0", "unknown"]))
    assert len(with_unknown) == 6


def test_anatomy_whitelist_is_hierarchy_aware(snapshot: PlanningSnapshot) -> None:
    phases, _, slugs = plan_phases(snapshot, spec(anatomy_whitelist=["ABDOMEN"]))
    assert slugs == ["ct-seg-big"]  # its liver is inside the abdomen
    rejected = {r["slug"]: r["reason"] for r in table(phases[3], "rejected")["rows"]}
    assert rejected["mr-seg"] == "anatomy Brain is outside the whitelist"
    assert rejected["mr-unlab"] == "anatomy unknown"


def test_same_inputs_give_the_same_plan_whatever_the_record_order() -> None:
    shuffled = RECORDS[:]
    random.Random(3).shuffle(shuffled)
    first = plan_phases(PlanningSnapshot.from_records(7, RECORDS), spec())
    second = plan_phases(PlanningSnapshot.from_records(7, shuffled), spec())
    assert json.dumps(first) == json.dumps(second)


def test_survey_comparison_explains_unknown_organisations(snapshot: PlanningSnapshot) -> None:
    phases, _, _ = plan_phases(snapshot, spec())
    comparison = table(phases[3], "survey_comparison")
    rows = {r["modality"]: r for r in comparison["rows"]}
    assert list(rows) == ["CT", "FUNDUS", "MR"]
    assert (rows["CT"]["survey_n_datasets"], rows["CT"]["survey_sum_images"]) == (10, 1_173_965)
    assert (rows["FUNDUS"]["survey_n_orgs"], rows["FUNDUS"]["survey_labeled"]) == (17, 0.95238)
    mr_reasons = " ".join(rows["MR"]["reasons"])
    assert "n_orgs" not in mr_reasons  # 2 known organisations, as in the survey
    assert "n_orgs 2 known here, 4 in the survey: every organisation is known" in " ".join(
        rows["CT"]["reasons"]
    )
    assert "3D volumes admitted as 2D sources: 2" in mr_reasons
    assert "merged from duplicate survey rows (listed once here): 1" in mr_reasons
    assert not any(
        "differ from the survey example's" in n for n in phases[3]["notes"]
    )  # same rules, goal aside
    other, _, _ = plan_phases(snapshot, spec(min_valid_images_per_dataset=50))
    assert any(
        "differ from the survey example's in: min_valid_images_per_dataset;" in n for n in other[3]["notes"]
    )


def test_no_comparison_when_no_survey_modality_is_targeted(snapshot: PlanningSnapshot) -> None:
    phases, _, _ = plan_phases(snapshot, spec(target_modalities=["XR"]))
    assert all(t["id"] != "survey_comparison" for t in phases[3]["tables"])


# -- the API ----------------------------------------------------------------------------------------------------
def test_plan_round_trip_through_the_api(client: TestClient) -> None:
    body = {"spec": {**SURVEY_LIKE, "target_modalities": ["mri", "Fundus Photo"]}}
    created = client.post("/api/v1/plans", json=body)
    assert created.status_code == 201
    plan = created.json()
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", plan["id"])
    assert plan["url"] == f"/plans/{plan['id']}"
    assert created.headers["location"] == f"/api/v1/plans/{plan['id']}"
    assert plan["spec"]["target_modalities"] == ["MR", "FUNDUS"]
    assert [p["id"] for p in plan["phases"]] == ["harmonisation", "alignment", "blueprint", "indexing"]
    assert [p["number"] for p in plan["phases"]] == [1, 2, 3, 4]
    assert all(p["tables"] and p["charts"] for p in plan["phases"])
    assert isinstance(plan["catalog_version"], int)

    fetched = client.get(f"/api/v1/plans/{plan['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == plan

    again = client.post("/api/v1/plans", json=body).json()
    assert again["id"] != plan["id"]
    assert again["phases"] == plan["phases"] and again["summary"] == plan["summary"]


def test_plan_dataset_slugs_is_the_final_list(client: TestClient, session: Any) -> None:
    from app.mdfp.service import plan_dataset_slugs

    plan = client.post("/api/v1/plans", json={"spec": SURVEY_LIKE}).json()
    final = table(plan["phases"][3], "final")
    assert final["fields"][0] == "slug"
    slugs = plan_dataset_slugs(session, plan["id"])
    assert slugs == [r["slug"] for r in final["rows"]]
    assert len(slugs) == final["total_rows"] > 0


def test_unknown_plan_is_a_404_envelope(client: TestClient, session: Any) -> None:
    from app.common.errors import NotFound
    from app.mdfp.service import plan_dataset_slugs

    response = client.get("/api/v1/plans/no-such-plan")
    assert response.status_code == 404
    assert response.json() == {
        "ok": False,
        "status": 404,
        "error": "plan 'no-such-plan' not found",
        "errors": [],
    }
    with pytest.raises(NotFound):
        plan_dataset_slugs(session, "no-such-plan")


@pytest.mark.parametrize(
    ("spec_body", "loc", "message"),
    [
        (
            {"target_modalities": ["CT", "Xray2"]},
            ["body", "spec", "target_modalities", 1],
            "allowed values: CT, MR",
        ),
        (
            {"min_valid_images_per_dataset": -5},
            ["body", "spec", "min_valid_images_per_dataset"],
            "greater than or equal to 0",
        ),
        (
            {"target_modalities": ["CT"], "colour": "blue"},
            ["body", "spec", "colour"],
            "Extra inputs are not permitted",
        ),
        (
            {"selection": {"max_datasets": 0}},
            ["body", "spec", "selection", "max_datasets"],
            "greater than or equal to 1",
        ),
        (
            {"anatomy_whitelist": ["lungs", "elbowz"]},
            ["body", "spec", "anatomy_whitelist", 1],
            "unknown anatomy 'elbowz'",
        ),
    ],
)
def test_invalid_specs_are_422_with_field_level_locations(
    client: TestClient, spec_body: dict[str, Any], loc: list[Any], message: str
) -> None:
    response = client.post("/api/v1/plans", json={"spec": spec_body})
    assert response.status_code == 422
    body = response.json()
    assert body["ok"] is False and body["status"] == 422
    assert body["errors"][0]["loc"] == loc
    assert message in body["errors"][0]["msg"]


def test_unknown_top_level_key_is_rejected(client: TestClient) -> None:
    response = client.post("/api/v1/plans", json={"spec": {}, "extra": 1})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "extra"]


def test_schema_and_presets_are_published(client: TestClient) -> None:
    schema = client.get("/api/v1/plans/schema").json()
    assert schema["additionalProperties"] is False
    assert "target_modalities" in schema["properties"]
    assert "FUNDUS" in schema["properties"]["target_modalities"]["description"]
    presets = client.get("/api/v1/plans/presets").json()
    assert presets["count"] == len(presets["results"]) >= 1
    assert presets["results"][0]["id"] == SURVEY_PRESET
    openapi = client.get("/api/v1/openapi.json").json()
    operations = {op["operationId"] for path in openapi["paths"].values() for op in path.values()}
    assert {"create_plan", "get_plan", "list_plan_presets", "get_plan_spec_schema"} <= operations
    create = openapi["paths"]["/api/v1/plans"]["post"]
    assert "survey" in create["requestBody"]["content"]["application/json"]["examples"]


def test_survey_preset_on_the_seed_catalog_gives_the_curated_table(client: TestClient) -> None:
    spec_body = get_preset(SURVEY_PRESET).spec.model_dump(mode="json")
    plan = client.post("/api/v1/plans", json={"spec": spec_body}).json()
    summary = plan["summary"]
    assert [r["modality"] for r in summary] == ["CT", "MR", "FUNDUS"]
    for row in summary:
        assert {
            "n_datasets",
            "sum_images",
            "n_orgs",
            "labeled_ratio",
            "orgs_unknown",
            "images_unknown",
        } <= set(row)
        assert row["n_datasets"] > 0 and row["sum_images"] > 0
        assert 0 <= row["labeled_ratio"] <= 1
        # the seed catalog records no organisation: counted as unknown, never guessed
        assert row["n_orgs"] == 0 and row["orgs_unknown"] == row["n_datasets"]
    reasons = " ".join(r for row in comparison_rows(plan) for r in row["reasons"])
    assert "the organisation is unknown for all" in reasons
    assert [r["modality"] for r in comparison_rows(plan)] == ["CT", "FUNDUS", "MR"]


def comparison_rows(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return next(t for t in plan["phases"][3]["tables"] if t["id"] == "survey_comparison")["rows"]


# -- the pages ----------------------------------------------------------------------------------------------------
def test_new_plan_page_offers_presets_filters_and_a_json_editor(client: TestClient) -> None:
    page = client.get("/plans/new")
    assert page.status_code == 200
    html = page.text
    assert 'name="spec_json"' in html and 'name="target_modalities"' in html
    assert f'value="{SURVEY_PRESET}" selected' in html
    assert '<a href="/plans/new" aria-current="page">Plan</a>' in html
    blank = html_module.unescape(client.get("/plans/new?preset=blank").text)
    assert '"target_modalities": []' in blank


def test_form_creates_a_plan_and_redirects_to_its_page(client: TestClient) -> None:
    form = {
        "source": "filters",
        "goal": "CT and MR",
        "target_modalities": ["CT", "MR"],
        "target_task_types": ["segmentation"],
        "include_unlabeled": "on",
        "prefer_labeled": "on",
        "min_valid_images_per_dataset": "100",
    }
    response = client.post("/plans", data=form, follow_redirects=False)
    assert response.status_code == 303
    location = response.headers["location"]
    assert re.fullmatch(r"/plans/[A-Za-z0-9_-]{22}", location)
    page = client.get(location)
    assert page.status_code == 200
    plan_id = location.rsplit("/", 1)[1]
    assert f'<link rel="alternate" type="application/json" href="/api/v1/plans/{plan_id}">' in page.text
    assert 'id="curated-summary"' in page.text
    for phase in ("harmonisation", "alignment", "blueprint", "indexing"):
        assert f'id="phase-{phase}"' in page.text
    assert 'data-table="final"' in page.text and 'data-table="rejected"' in page.text
    assert "differ from the survey" in page.text


def test_form_errors_are_shown_next_to_the_field(client: TestClient) -> None:
    form = {"source": "filters", "target_modalities": ["CT"], "min_valid_images_per_dataset": "-3"}
    response = client.post("/plans", data=form)
    assert response.status_code == 422
    assert 'id="error-min_valid_images_per_dataset-1"' in response.text
    assert 'aria-describedby="error-min_valid_images_per_dataset-1' in response.text
    assert "greater than or equal to 0" in response.text


def test_json_editor_errors_name_the_path(client: TestClient) -> None:
    bad = {"source": "json", "spec_json": json.dumps({"target_modalities": ["CT", "Xray2"], "foo": 1})}
    response = client.post("/plans", data=bad)
    assert response.status_code == 422
    assert "spec.target_modalities[1]" in response.text and "spec.foo" in response.text
    broken = client.post("/plans", data={"source": "json", "spec_json": '{"target_modalities": ['})
    assert broken.status_code == 422
    assert "not valid JSON" in broken.text
    good = client.post(
        "/plans",
        data={"source": "json", "spec_json": json.dumps({"spec": SURVEY_LIKE})},
        follow_redirects=False,
    )
    assert good.status_code == 303


def test_plan_page_404(client: TestClient) -> None:
    response = client.get("/plans/nope", headers={"accept": "text/html"})
    assert response.status_code == 404


# -- the CLI -----------------------------------------------------------------------------------------------------
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("plan")(plan_command)

    @app.callback()
    def main() -> None:
        """Test harness: the planner command as app/cli.py registers it."""

    return app


def test_cli_prints_the_phases_and_writes_json(tmp_path: Path, configured_services: None) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SURVEY_LIKE))
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(
        cli(), ["plan", str(spec_file), "--json", str(out), "--save"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    for heading in ("1 Harmonisation", "2 Alignment", "3 Blueprint", "4 Indexing", "Curated summary"):
        assert heading in result.output
    written = json.loads(out.read_text())
    assert [p["id"] for p in written["phases"]] == ["harmonisation", "alignment", "blueprint", "indexing"]
    assert f"saved as plan {written['id']}" in result.output


def test_cli_reports_an_invalid_spec_with_its_location(tmp_path: Path, configured_services: None) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"target_modalities": ["CT", "Xray2"]}))
    result = CliRunner().invoke(cli(), ["plan", str(spec_file)])
    assert result.exit_code == 2
    assert "target_modalities.1: unknown modality 'Xray2'" in result.output
