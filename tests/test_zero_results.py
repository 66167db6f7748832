"""Zero-result help: spellings the catalog knows, words to drop, filters to relax, each with its count."""

from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def search(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/api/v1/datasets", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_short_misspelling_gets_did_you_mean_with_counts(client: TestClient) -> None:
    body = search(client, q="lng")
    if body["count"]:  # 'lng' begins some catalog word: use a word that begins none
        body = search(client, q="lgn")
    assert body["count"] == 0
    help_ = body["zero_results"]
    assert help_["did_you_mean"], help_
    for suggestion in help_["did_you_mean"]:
        again = client.get(suggestion["url"]).json()
        assert again["count"] == suggestion["count"] > 0
    assert len(body["facets"]) == 12  # facets stay in the answer


def test_words_to_drop_and_filters_to_relax_each_with_the_count_they_give(client: TestClient) -> None:
    body = search(client, q="glioma kidney", modality="US")
    assert body["count"] == 0
    help_ = body["zero_results"]
    dropped = {s["label"]: s for s in help_["drop_words"]}
    assert 'without "kidney"' in dropped and 'without "glioma"' in dropped
    relaxed = {s["label"]: s for s in help_["relax"]}
    for suggestion in [*help_["drop_words"], *help_["relax"]]:
        assert client.get(suggestion["url"]).json()["count"] == suggestion["count"] > 0
    assert all(label.startswith("without modality") for label in relaxed) or not relaxed
    assert [f["name"] for f in body["facets"]][:3] == ["modality", "anatomy", "task"]


def test_a_search_with_results_has_no_zero_result_help(client: TestClient) -> None:
    body = search(client, q="liver")
    assert body["count"] > 0 and body["zero_results"] is None


def test_nothing_close_gives_no_suggestions_but_an_answer(client: TestClient) -> None:
    body = search(client, q="zzzzqqq")
    assert body["count"] == 0
    assert body["zero_results"]["did_you_mean"] == []


def test_a_filter_that_empties_a_text_search_is_offered_for_relaxing(client: TestClient) -> None:
    body = search(client, q="KiTS19", modality="MR")
    assert body["count"] == 0
    relax = body["zero_results"]["relax"]
    assert [s["label"] for s in relax] == ["without modality: MR"]
    assert relax[0]["count"] == search(client, q="KiTS19")["count"] == 1
    assert client.get(relax[0]["url"]).json()["results"][0]["slug"] == "kits19"


def test_the_search_page_shows_the_suggestions_and_keeps_its_facets(client: TestClient) -> None:
    page = client.get("/datasets", params={"q": "KiTS19", "modality": "MR"})
    assert page.status_code == 200
    html = page.text
    help_ = html[html.index('class="zero-results"') :]
    help_ = help_[: help_.index("</div>")]
    assert "without modality: MR</a> (1)" in help_ and "KiTS19" in help_.split("drop-words")[1]
    assert 'id="filters"' in html  # the facets stay on the page


WORDS = [
    "glioma",
    "kidney",
    "fundus",
    "knee",
    "polyp",
    "covid",
    "lng",
    "brian",
    "zzzq",
    "mammography",
    "spleen",
]
FACETS = [
    ("modality", "US"),
    ("modality", "MR"),
    ("anatomy", "brain"),
    ("task", "registration"),
    ("dim", "2D"),
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3, unique=True),
    facets=st.lists(st.sampled_from(FACETS), max_size=2, unique_by=lambda f: f[0]),
)
def test_every_suggestion_finds_what_it_says(
    client: TestClient, words: list[str], facets: list[tuple[str, str]]
) -> None:
    params = [("q", " ".join(words)), *facets]
    body = client.get("/api/v1/datasets", params=params).json()
    if body["count"]:
        assert body["zero_results"] is None
        return
    help_ = body["zero_results"]
    for suggestion in [*help_["did_you_mean"], *help_["drop_words"], *help_["relax"]]:
        assert suggestion["count"] > 0
        assert client.get(suggestion["url"]).json()["count"] == suggestion["count"], suggestion
    # a filter is offered for relaxing exactly when the search without it finds something
    for facet, value in facets:
        without = [p for p in params if p != (facet, value)]
        count = client.get("/api/v1/datasets", params=without).json()["count"]
        offered = [s for s in help_["relax"] if s["label"].startswith(f"without {facet}:")]
        assert (count > 0) == bool(offered) and (not offered or offered[0]["count"] == count)
