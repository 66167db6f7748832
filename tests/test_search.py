"""Search semantics through the JSON API: concepts, synonyms, facets, ranges, sorting, paging, near matches."""

from typing import Any

from fastapi.testclient import TestClient


def search(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/api/v1/datasets", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def names(body: dict[str, Any]) -> set[str]:
    return {r["name"] for r in body["results"]}


def test_chest_xray_classification_finds_datasets_whose_anatomy_says_lung(client: TestClient) -> None:
    body = search(client, anatomy="chest", modality="X-ray", task="cls", page_size=200)
    assert {"CheXpert", "NIH Chest X-ray 14"} <= names(body)
    assert all("lung" in r["anatomies"] or "thorax" in r["anatomies"] for r in body["results"])


def test_brain_mr_however_mr_is_spelled(client: TestClient) -> None:
    counts = {
        search(client, modality=m, anatomy="brain")["count"]
        for m in ("MR", "MRI", "mr", "Magnetic Resonance")
    }
    assert len(counts) == 1 and counts.pop() > 50


def test_abdomen_includes_its_organs(client: TestClient) -> None:
    body = search(client, anatomy="abdomen", modality="CT", page_size=200)
    found = names(body)
    while body["next_url"]:
        body = client.get(body["next_url"]).json()
        found |= names(body)
    assert {"KiTS23", "MSD03-Liver", "MSD07-Pancreas"} <= found


def test_or_within_a_facet_and_across_facets(client: TestClient) -> None:
    ct = search(client, modality="CT")["count"]
    mr = search(client, modality="MR")["count"]
    both = search(client, modality=["CT", "MR"])["count"]
    ct_and_mr = search(client, modality="CT", task="seg")["count"]
    assert max(ct, mr) < both <= ct + mr
    assert ct_and_mr < ct


def test_ranges_and_unknown_values(client: TestClient) -> None:
    body = search(client, year__gte=2020, year__lte=2021, page_size=200)
    assert body["count"] > 0
    assert all(2020 <= r["year"] <= 2021 for r in body["results"])
    big = search(client, images__gte=100_000, page_size=200)
    assert all(r["images"] >= 100_000 for r in big["results"])


def test_sorting(client: TestClient) -> None:
    by_images = [r["images"] for r in search(client, sort="images", page_size=50)["results"]]
    assert by_images == sorted(by_images, reverse=True)
    by_name = [r["name"].lower() for r in search(client, sort="name", page_size=50)["results"]]
    assert by_name == sorted(by_name)
    by_year_asc = [
        r["year"] for r in search(client, sort="year", order="asc", year__gte=1990, page_size=50)["results"]
    ]
    assert by_year_asc == sorted(by_year_asc)


def test_prefer_open_ranks_open_access_first(client: TestClient) -> None:
    body = search(client, modality="CT", prefer_open="true", page_size=20)
    assert all(r["access"] == "open" for r in body["results"])
    default = search(client, modality="CT", page_size=20)["results"]
    assert sum(r["labeled"] for r in default) >= 15  # labeled datasets rank first by default


def test_cursor_pagination_visits_every_result_once(client: TestClient) -> None:
    body = search(client, modality="MR", page_size=37)
    seen: list[str] = [r["slug"] for r in body["results"]]
    while body["next_url"]:
        body = client.get(body["next_url"]).json()
        seen += [r["slug"] for r in body["results"]]
    assert len(seen) == len(set(seen)) == search(client, modality="MR")["count"]


def test_full_text_with_typos(client: TestClient) -> None:
    assert "MSD03-Liver" in names(search(client, q="liver", page_size=200))
    assert "MSD03-Liver" in names(search(client, q="livr segmentaton", page_size=200))
    assert search(client, q="kidny")["count"] > 0
    assert search(client, q="zzzzqqq")["count"] == 0


def test_near_matches_miss_one_or_two_constraints_with_reasons(client: TestClient) -> None:
    body = search(client, modality="MR", anatomy="brain", access="open", dim="2D")
    assert body["near_matches"]
    strict = {r["slug"] for r in body["results"]}
    for near in body["near_matches"]:
        assert near["dataset"]["slug"] not in strict
        assert 1 <= len(near["missed"]) <= 2
        assert all(
            reason.split(" is ")[0] in {"modality", "anatomy", "access", "dim"} for reason in near["missed"]
        )
    assert any(
        reason.startswith(("access is", "dim is")) for n in body["near_matches"] for reason in n["missed"]
    )
    misses = [len(near["missed"]) for near in body["near_matches"]]
    assert misses == sorted(misses)  # datasets missing one constraint come before those missing two


def test_near_matches_are_the_closest_whatever_the_ties() -> None:
    """The near matches chosen without sorting every candidate are the first of the full sort (fewer misses,
    then higher ranking score, then catalog position), on scores with many ties."""
    import numpy as np

    from app.search.near import closest

    rng = np.random.default_rng(7)
    for _ in range(2000):
        n = int(rng.integers(0, 60))
        misses = rng.integers(0, 4, n).astype(np.uint8)
        score = rng.integers(0, 4, n) / 2  # few distinct values: ties everywhere
        positions = np.flatnonzero((misses >= 1) & (misses <= 2))
        k = int(rng.integers(0, 15))
        expected = positions[np.lexsort((-score[positions], misses[positions]))][:k]
        assert closest(positions, misses, score, k).tolist() == expected.tolist()


def test_facet_payload_shape(client: TestClient) -> None:
    body = search(client, modality="CT")
    facets = {f["name"]: f for f in body["facets"]}
    assert set(facets) == {
        "modality", "anatomy", "task", "dim", "access", "labeled", "host", "year", "size", "licence", "fetch", "quality",
    }  # fmt: skip
    ct = next(v for v in facets["modality"]["results"] if v["value"] == "CT")
    assert ct["selected"] and ct["toggle_url"] == "/api/v1/datasets?"
    lung = next(v for v in facets["anatomy"]["results"] if v["value"] == "lung")
    assert lung["parent"] == "thorax"


def test_toggle_links_keep_the_text_and_other_selections_exactly(client: TestClient) -> None:
    from urllib.parse import parse_qsl, urlsplit

    q = "lung & heart/ünïcode+1"
    body = search(client, q=q, modality=["CT", "MR"], year__gte=2015, sort="name")
    for facet in body["facets"]:
        for value in facet["results"]:
            url = urlsplit(value["toggle_url"])
            pairs = parse_qsl(url.query)
            assert url.path == "/api/v1/datasets" and ("q", q) in pairs
            assert ("year__gte", "2015") in pairs and ("sort", "name") in pairs
            modalities = [v for k, v in pairs if k == "modality"]
            if facet["name"] == "modality":
                toggled = [m for m in ["CT", "MR"] if m != value["value"]]
                if not value["selected"]:
                    toggled = ["CT", "MR", value["value"]]
                assert modalities == toggled
            else:
                assert modalities == ["CT", "MR"]
                assert (facet["name"], value["value"]) in pairs or value["selected"]


def test_selected_values_show_even_at_zero(client: TestClient) -> None:
    body = search(client, modality="INFRARED", anatomy="brain")
    infrared = next(
        v for f in body["facets"] if f["name"] == "modality" for v in f["results"] if v["value"] == "INFRARED"
    )
    assert infrared["selected"]
    brain = next(
        v for f in body["facets"] if f["name"] == "anatomy" for v in f["results"] if v["value"] == "brain"
    )
    assert brain["selected"]


def test_json_body_search_matches_query_string(client: TestClient) -> None:
    via_get = search(client, modality="MRI", anatomy="brain", year__gte=2018)
    via_post = client.post(
        "/api/v1/datasets/search",
        json={"terms": {"modality": ["mri"], "anatomy": ["Brain"]}, "ranges": {"year": {"gte": 2018}}},
    )
    assert via_post.status_code == 200
    assert via_post.json()["count"] == via_get["count"]


def test_dataset_vocabularies_and_statistics(client: TestClient) -> None:
    detail = client.get("/api/v1/datasets/med-node").json()
    assert detail["raw_records"][0]["name"] == "MED-NODE"
    assert any(f["id"] == "disease_contradicts_anatomy" for f in detail["flags"])
    assert detail["json_ld"]["@type"] == "Dataset"
    anatomy = client.get("/api/v1/vocabularies/anatomy").json()
    lung = next(t for t in anatomy["results"] if t["id"] == "lung")
    assert lung["parent_id"] == "thorax" and lung["code"] == "UBERON:0002048"
    stats = client.get("/api/v1/statistics").json()
    total = stats["datasets"]
    assert sum(v["count"] for v in stats["distributions"]["access"]["results"]) == total
    assert stats["taxonomy"]["children"]


def test_the_survey_multi_mark_is_refused_with_what_to_do_instead(client: TestClient) -> None:
    response = client.get("/api/v1/datasets", params={"modality": "Multi"})
    assert response.status_code == 422
    text = response.text
    assert (
        "several modality tables" in text and "modality=CT&modality=MR" in text and "allowed values" in text
    )
