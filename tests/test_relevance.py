"""Search relevance through the JSON API: the examples of issue 11 as a researcher would type them."""

import html
import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session


def search(client: TestClient, q: str, **params: Any) -> dict[str, Any]:
    response = client.get("/api/v1/datasets", params={"q": q, **params})
    assert response.status_code == 200, response.text
    return response.json()


def slugs(body: dict[str, Any]) -> list[str]:
    return [r["slug"] for r in body["results"]]


def test_brain_tumor_segmentation_finds_every_brats_edition_and_says_it_widened(client: TestClient) -> None:
    body = search(client, "brain tumor segmentation", page_size=50)
    found = slugs(body)
    brats = [s for s in found if s.startswith("brats-20")]
    assert len(brats) >= 10, found
    assert all(s.startswith("brats") or s.startswith("msd01") for s in found[:10]), found[:10]
    assert "Brain tumor" in body["interpretation"]["concepts"]
    assert "Glioma" in body["interpretation"]["also_matching"]
    # British spelling and French meet the same datasets
    assert search(client, "brain tumour segmentation")["count"] == body["count"]
    assert search(client, "tumeur cerveau")["count"] >= body["count"]


def test_a_name_with_its_number_apart_or_its_full_name_finds_kits19(client: TestClient) -> None:
    for q in ("KiTS19", "kits 19", "kits-19", "KITS 19", "Kidney Tumor Segmentation Challenge 2019"):
        assert slugs(search(client, q))[:1] == ["kits19"], q
    editions = slugs(search(client, "Kidney Tumor Segmentation Challenge"))[:3]
    assert sorted(editions) == ["kits19", "kits21", "kits23"]


def test_acronyms_and_full_names_meet(client: TestClient) -> None:
    msd = set(slugs(search(client, "Medical Segmentation Decathlon", page_size=20)))
    assert len({s for s in msd if s.startswith("msd")}) == 10
    assert slugs(search(client, "Liver Tumor Segmentation Challenge"))[:1] == ["lits"]
    assert slugs(search(client, "Alzheimer's Disease Neuroimaging Initiative"))[:1] == ["adni"]


def test_an_exact_dataset_name_ranks_first(client: TestClient) -> None:
    for name, slug in (("LiTS", "lits"), ("ACDC", "acdc"), ("DRIVE", "drive"), ("BraTS 2021", "brats-2021"),
                       ("CheXpert", "chexpert"), ("MoNuSeg", "monuseg"), ("ISLES 2022", "isles-2022")):  # fmt: skip
        assert slugs(search(client, name))[:1] == [slug], name


def test_a_one_letter_typo_of_a_common_word_finds_what_the_word_finds(client: TestClient) -> None:
    total = search(client, "", page_size=1)["count"]
    for word, typo in (
        ("lung", "lnug"),
        ("liver", "livre"),
        ("brain", "brian"),
        ("segmentation", "segmentatoin"),
    ):
        right = search(client, word)
        wrong = search(client, typo)
        assert wrong["count"] == right["count"], (word, typo)
        assert wrong["interpretation"]["spelling"], typo
        if word != "segmentation":  # a word that is in half the catalog may find half the catalog
            assert wrong["count"] < total / 4, (typo, wrong["count"], total)


def test_short_words_are_not_matched_by_misspellings(client: TestClient) -> None:
    # 'lng' is one edit from 'lung', but a three-letter word has no edit budget: it finds what it begins
    body = search(client, "lng")
    assert body["count"] < search(client, "lung")["count"]
    assert not body["interpretation"]["spelling"]


def test_exact_and_prefix_matches_rank_before_misspellings(client: TestClient) -> None:
    # 'liver' exact in a name outranks anything found through a close spelling
    first = search(client, "liver")["results"][0]
    assert "liver" in first["name"].lower()


def test_non_english_words(client: TestClient) -> None:
    lunge = search(client, "Lunge")
    assert lunge["count"] == search(client, "lung")["count"] > 0
    assert search(client, "Hirntumor")["count"] > 0
    assert search(client, "cancer du poumon")["count"] > 0
    # 'sein' is French for breast, not a misspelling of 'skin' or 'vein'
    sein = search(client, "cancer du sein", page_size=50)
    assert sein["count"] > 0 and sein["interpretation"]["spelling"] == {}, sein["interpretation"]
    assert all(
        "breast" in r["anatomies"] or "Breast" in " ".join(r["diseases"]) for r in sein["results"][:10]
    )
    assert search(client, "Magen")["count"] == search(client, "stomach")["count"] > 0


def test_every_curated_alias_names_a_catalog_record(session: Session) -> None:
    from app.catalog.service import canonical_slug
    from app.search.concepts import ALIASES

    missing = [slug for entry in ALIASES for slug in entry.slugs if canonical_slug(session, slug) is None]
    assert not missing


def test_prefer_open_puts_open_datasets_first_within_a_text_search(client: TestClient) -> None:
    body = search(client, "lung", prefer_open="true", page_size=200)
    opened = [r["access"] == "open" for r in body["results"]]
    assert any(opened) and not all(opened)
    assert opened == sorted(opened, reverse=True)  # every open dataset before the first that is not
    plain = search(client, "lung", page_size=200)
    assert {r["slug"] for r in plain["results"]} == {r["slug"] for r in body["results"]}


def test_a_dataset_name_is_not_read_as_a_misspelling_of_another(client: TestClient) -> None:
    # 'ACDC' and 'LIDC' are names: a dataset one letter away ('ICDC', 'LIHC') is another dataset, not a guess
    for q, other in (("ACDC", "icdc"), ("LIDC", "tcga-lihc"), ("ADNI", None)):
        body = search(client, q, page_size=50)
        assert body["interpretation"]["spelling"] == {}, (q, body["interpretation"])
        if other is not None:
            assert not any(s.startswith(other) for s in slugs(body)), (q, slugs(body))
    # other editions of a named dataset (same letters, another number) are still offered
    editions = slugs(search(client, "brats2021", page_size=50))
    assert editions[0] == "brats-2021" and len([s for s in editions if s.startswith("brats-20")]) >= 10, (
        editions
    )


def test_the_page_says_what_a_concept_query_also_matched(client: TestClient) -> None:
    body = client.get("/api/v1/datasets", params={"q": "brain tumor segmentation"}).json()
    also = body["interpretation"]["also_matching"]
    assert also, "the query is widened to narrower concepts"
    page = client.get("/datasets", params={"q": "brain tumor segmentation"}, headers={"Accept": "text/html"})
    reading = re.search(r'<p class="text-reading"[^>]*>(.*?)</p>', page.text, re.S)
    assert reading, "the results say how the query was read"
    assert all(concept in html.unescape(reading.group(1)) for concept in also)
