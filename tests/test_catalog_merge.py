"""One record per real dataset: the merge rules against brute force, the seed catalog's merges and the 'Why'
examples of issue 11 (duplicates, 'Multi', 'Reg', 'QA', 'head and neck', false contradiction flags). Pure:
no database (the redirects are tested in tests/test_catalog_redirects.py)."""

import json
import re
from functools import cache
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.catalog.evidence import compact_name, decide_abbreviations, decide_modalities
from app.catalog.importer import SEED_FILE, DatasetRecord, ImportPlan, legacy_slugs, load_rows, plan_import
from app.catalog.merge import RULES, cluster_rows, landing_page
from app.catalog.normalise import aliases_of, normalise_row


@cache
def seed_plan() -> ImportPlan:
    return plan_import(load_rows(SEED_FILE))


def record(name: str) -> dict[str, Any]:
    """The one record whose name or alias is `name` (fails if none or several)."""
    found = [r.values for r in seed_plan().records if name in (r.values["name"], *r.values["aliases"])]
    assert len(found) == 1, [f["slug"] for f in found]
    return found[0]


# -- the rules against brute force ------------------------------------------------------------------------------
NAMES = [
    "Alpha",
    "alpha ",
    "ALPHA-1",
    "Beta (BT)",
    "BT",
    "Gamma 2020",
    "Gamma2020",
    "Delta (Seg)",
    "Seg",
    "Eps",
]
URLS = ["https://a.org/x", "http://www.a.org/x/", "https://b.org", ""]


def _row(name: str, url: str, year: int, images: int, modality: str, structure: str) -> dict[str, Any]:
    return {
        "section": "CT Datasets", "name": name, "url": url, "year": str(year), "dim": "3D", "modality": modality,
        "structure": structure, "samples": str(images), "label": True, "task": "Seg", "diseases": "NA",
        "access": "Open", "download_method": "", "auth_instructions": "",
    }  # fmt: skip


def _brute_force(rows: list[dict[str, Any]]) -> set[frozenset[int]]:
    """Connected components of the pairwise rules, by repeated closure over every pair."""
    facts = [normalise_row(r) for r in rows]

    def joined(i: int, j: int) -> bool:
        a, b = rows[i], rows[j]
        if compact_name(a["name"]) == compact_name(b["name"]):
            return True
        fa, fb = facts[i], facts[j]
        if (
            landing_page(a["url"])
            and landing_page(a["url"]) == landing_page(b["url"])
            and fa.images
            and fa.images == fb.images
            and fa.year == fb.year
            and fa.year is not None
            and fa.modalities
            and set(fa.modalities) == set(fb.modalities)
            and set(fa.anatomies) == set(fb.anatomies)
        ):
            return True
        for x, y in ((a, b), (b, a)):
            for alias in aliases_of(x["name"].strip()):
                generic = compact_name(alias) in {"seg"} or len(compact_name(alias)) < 3
                if not generic and compact_name(alias) == compact_name(y["name"]):
                    return True
        return False

    groups = [{i} for i in range(len(rows))]
    changed = True
    while changed:
        changed = False
        for x in range(len(groups)):
            for y in range(x + 1, len(groups)):
                if any(joined(i, j) for i in groups[x] for j in groups[y]):
                    groups[x] |= groups.pop(y)
                    changed = True
                    break
            if changed:
                break
    return {frozenset(g) for g in groups}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(NAMES),
            st.sampled_from(URLS),
            st.sampled_from([2019, 2020]),
            st.sampled_from([0, 10, 20]),
            st.sampled_from(["CT", "MR", "Multi"]),
            st.sampled_from(["Liver", "Brain"]),
        ),
        min_size=1,
        max_size=9,
    )
)
def test_clusters_are_the_connected_components_of_the_rules(specs: list[tuple[Any, ...]]) -> None:
    rows = [_row(*spec) for spec in specs]
    clusters = cluster_rows(rows, [normalise_row(r) for r in rows])
    assert {frozenset(c.rows) for c in clusters} == _brute_force(rows)
    for cluster in clusters:  # a cluster of n rows was made by n - 1 recorded joins
        assert len(cluster.joins) == len(cluster.rows) - 1
        assert {j.rule for j in cluster.joins} <= set(RULES)


# -- the seed catalog -------------------------------------------------------------------------------------------
def test_every_row_is_kept_once_and_every_published_slug_has_a_home() -> None:
    plan = seed_plan()
    rows = json.loads(SEED_FILE.read_text())
    assert sum(len(r.values["raw_records"]) for r in plan.records) == len(rows)
    slugs = {r.slug for r in plan.records}
    redirects = {r.old_slug: r.slug for r in plan.redirects}
    published = set(legacy_slugs().values())
    assert plan.parts == len(published)
    assert not slugs & set(redirects)  # a live slug never redirects
    assert set(redirects.values()) <= slugs
    assert published <= slugs | set(redirects)
    # fewer records than before: one per real dataset, well under 1,000
    merged = [r for r in plan.records if r.values["parts"]]
    assert len(plan.records) == plan.parts - sum(len(r.values["parts"]) - 1 for r in merged) < 1000


def test_merged_records_list_their_parts_and_why() -> None:
    for item in seed_plan().records:
        values = item.values
        if not values["parts"]:
            assert values["merge_reasons"] == [] and values["contradictions"] == []
            continue
        assert sum(p["rows"] for p in values["parts"]) == len(values["raw_records"])
        assert values["merge_reasons"], item.slug
        names = {n for m in values["merge_reasons"] for n in m["names"]}
        assert names <= {r["name"].strip() for r in values["raw_records"]} | {
            re.sub(r"\s+", " ", r["name"]).strip() for r in values["raw_records"]
        }


def test_duplicates_under_two_names_are_one_record() -> None:
    # same name but for spacing
    assert record("PAIP2023")["slug"] == record("PAIP 2023")["slug"]
    # an acronym in parentheses names another row, at the old and the new TCIA page
    nlst = record("National Lung Screening Trial")
    assert "National Lung Screening Trial (NLST)" in nlst["aliases"]
    assert len({p["url"] for p in nlst["parts"]}) == 2
    # sub-tasks at one landing page stating the same facts
    bcnb = record("BCNB")
    assert len(bcnb["parts"]) == 6 and bcnb["images"] == 1100
    # hand-checked: one challenge listed under two names
    assert record("EndoVis15")["slug"] == record("EndoVis 2015 - APDCV")["slug"] == "endovis-2015"
    # hand-checked: sub-tasks and parts the rules miss (another count, an empty anatomy, another page)
    for names, slug in (
        (("EndoVis 2020-CATARACTS Workflow", "EndoVis20-CATARACTS"), "endovis-2020-cataracts"),
        (("P2ILF", "EndoVis22-P2ILF", "EndoVis 2022 - P2ILF 3D-CT"), "p2ilf"),
        (("MRL Eye Gender", "MRL Eye Glasses cls"), "mrl-eye"),
    ):
        assert {record(name)["slug"] for name in names} == {slug}, names


def test_sub_datasets_of_one_challenge_stay_apart_when_they_are_different_data() -> None:
    # StructSeg2019 tasks 1 and 2 share a page, a count and a year but not their patients (curated keep-apart)
    assert record("StructSeg2019 Task 1")["slug"] != record("StructSeg2019 Task 2")["slug"]
    # the Medical Segmentation Decathlon's tasks share a page, never their facts
    assert record("MSD03-Liver")["slug"] != record("MSD09-Spleen")["slug"]


def test_contradicting_parts_are_flagged_with_every_value() -> None:
    knoap = record("KNOAP2020")
    images = next(c for c in knoap["contradictions"] if c["field"] == "images")
    assert sorted(v["value"] for v in images["values"]) == [30, 453]
    assert "parts_disagree" in knoap["quality_flags"]
    assert knoap["images"] == 453  # the larger count: the parts are subsets of the whole


# -- 'Multi', 'Reg', 'QA', phrases, flags ------------------------------------------------------------------------
def test_multi_is_resolved_from_the_datasets_own_rows_or_name_else_unknown() -> None:
    mel = record("CMB-MEL")  # rows in the 2D tables say 'Multi'; its 3D rows state CT, PET, US, pathology
    assert set(mel["modalities"]) == {"CT", "PT", "US", "HISTOPATHOLOGY"}
    assert mel["notes"][0]["reason"] == "stated by the dataset's other survey rows"
    assert record("Prostate-MRI")["modalities"] == ["MR"]  # only its name says
    apollo = record("APOLLO-5")  # nothing says: unknown, not the survey tables' CT, XR, MR, US and PET
    assert apollo["modalities"] == [] and "modality_unknown" in apollo["quality_flags"]
    assert decide_modalities(["CT"], False, ["x"]) == (["CT"], None)


def test_reg_is_decided_per_dataset_with_the_reason() -> None:
    assert "registration" in record("Learn2Reg Lung CT")["tasks"]
    osic = record("OSIC Pulmonary Fibrosis Progression")
    assert "regression" in osic["tasks"] and "registration" not in osic["tasks"]
    assert "Progression" in osic["notes"][0]["reason"]
    hecktor = record("HECKTOR 2022")  # 'Seg/ Reg': task 2 predicts survival (hand-checked)
    assert set(hecktor["tasks"]) == {"segmentation", "regression"}
    assert hecktor["notes"][0]["reason"].startswith("hand-checked: ")
    assert "registration" in record("$$-RegPro2023")["tasks"]
    # nothing decides: both meanings, flagged
    tasks, notes, undecided = decide_abbreviations(["Reg"], ["Some Set"], ["Healthy"], ["Reg"])
    assert (tasks, undecided) == (["registration", "regression"], True)
    assert notes[0].reason == "nothing in the record decides: listed under both"


def test_qa_is_quality_assurance_not_question_answering() -> None:
    for name in ("QIDW", "RIDER Phantom MR", "MRQy-Quality-Measures"):
        tasks = record(name)["tasks"]
        assert "quality_assessment" in tasks and "vqa" not in tasks, name
    assert decide_abbreviations(["QA"], ["Med QA"], ["visual question answering"], ["QA"])[0] == ["vqa"]


def test_head_and_neck_stays_one_disease() -> None:
    for name in ("HaN-Seg", "HECKTOR 2021", "OpenKBP"):
        assert record(name)["diseases"] == ["Head and Neck Cancer"], name
    assert record("Lung and Colon Histopathology")["diseases"] == ["Lung and Colon Cancer"]


def test_false_disease_anatomy_contradictions_are_gone_true_ones_stay() -> None:
    flag = "disease_contradicts_anatomy"
    # lymph nodes of breast cancer, colon gland cells, cervical cytology, a sperm head, a phantom, a metastasis
    for name in (
        "SLN-Breast", "Histopathologic Cancer Det", "GlaS", "OCCISC", "HuSHeM", "CC-Radiomics-Phantom",
        "PDMR-BL0293-F563",
    ):  # fmt: skip
        assert flag not in record(name)["quality_flags"], name
    # a skin dataset whose disease says 'Brain'; a foot ulcer set whose disease says 'Breast cancer'; a chest
    # X-ray set whose disease says 'Diabetic retinopathy'; breast slides whose disease says 'Pneumothorax'
    for name in ("MED-NODE", "DFUC 2020", "NODE21", "CheXpert", "TIGER-wsibulk"):
        assert flag in record(name)["quality_flags"], name


def test_records_are_the_same_on_every_run() -> None:
    again = plan_import(load_rows(SEED_FILE))

    def key(records: list[DatasetRecord]) -> list[tuple[str, str]]:
        return [(r.slug, json.dumps(r.values, sort_keys=True, default=str)) for r in records]

    assert key(again.records) == key(seed_plan().records)


def test_every_hand_checked_entry_names_rows_of_the_seed() -> None:
    """A curated merge, keep-apart or task decision that names no row of the seed is dead data (a typo)."""
    from app.catalog.evidence import decisions
    from app.catalog.merge import curated

    names = {compact_name(r["name"]) for r in load_rows(SEED_FILE)}
    for kind in ("merge", "keep_apart"):
        for entry in curated()[kind]:
            assert {compact_name(n) for n in entry["names"]} <= names, entry
    for name, decision in decisions()["task"].items():
        assert name in names, name
        assert decision["reason"], name
