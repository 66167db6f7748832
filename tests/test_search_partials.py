"""htmx replies of the search page carry only what changed, and agree with the full page and the API."""

import re

from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from app.search.pages import FACET_VALUES_SHOWN, facet_panel
from app.search.schemas import Facet, FacetValue, SearchFilter

HTML = {"Accept": "text/html"}
RESULTS = {**HTML, "HX-Request": "true", "HX-Target": "results"}
PANELS = {**HTML, "HX-Request": "true", "HX-Target": "facet-panels"}
REGION = {**HTML, "HX-Request": "true"}  # a page rendered by an older version aims at the whole region


def oob_ids(html: str) -> set[str]:
    return set(re.findall(r'<[a-z]+ id="([^"]+)"[^>]*hx-swap-oob="true"', html))


def facet_counts(html: str, facet: str) -> dict[str, int]:
    block = html[html.index(f'id="facet-{facet}"') :]
    block = block[: block.index("</details>")]
    return {
        value: int(count.replace(",", ""))
        for value, count in re.findall(r'data-value="([^"]+)">.*?<span class="count">([\d,]+)</span>', block)
    }


def test_a_results_reply_is_the_results_and_what_changed_out_of_band(client: TestClient) -> None:
    url = "/datasets?modality=CT&dim=3D"
    reply = client.get(url, headers=RESULTS)
    assert reply.status_code == 200
    html = reply.text
    assert "<html" not in html and 'id="search-region"' not in html
    assert html.count('<section id="results"') == 1
    assert oob_ids(html) == {"json-twin", "search-fields", "facet-panels", "show-results"}
    assert "<title>" in html
    assert reply.headers["hx-push-url"] == url
    assert "HX-Target" in reply.headers["vary"]
    # the same count everywhere: results, drawer button, JSON twin
    api = client.get("/api/v1/datasets?modality=CT&dim=3D").json()
    assert f'data-count="{api["count"]}"' in html
    assert f"Show {api['count']:,} results" in html
    # the facet counts sent out of band are the API's
    facets = {f["name"]: f for f in api["facets"]}
    shown = facet_counts(html, "modality")
    assert shown and all(
        shown[v["value"]] == v["count"] for v in facets["modality"]["results"] if v["value"] in shown
    )


def test_partial_replies_are_smaller(client: TestClient) -> None:
    """What the browser receives per facet click, against the whole region it used to receive."""
    for url in ("/datasets", "/datasets?modality=CT", "/datasets?anatomy=thorax&task=seg"):
        page = len(client.get(url, headers=HTML).content)
        region = len(client.get(url, headers=REGION).content)
        results = len(client.get(url, headers=RESULTS).content)
        panels = len(client.get(url, headers=PANELS).content)
        assert results < region < page, (url, results, region, page)
        assert panels < results / 2, (url, panels, results)


def test_the_panels_reply_unfolds_a_facet_alone(client: TestClient) -> None:
    reply = client.get("/datasets?modality=CT&_more=anatomy", headers=PANELS)
    html = reply.text
    assert '<section id="results"' not in html and html.count('id="facet-panels"') == 1
    assert oob_ids(html) == {"json-twin", "search-fields"}
    assert reply.headers["hx-push-url"] == "/datasets?modality=CT&_more=anatomy"
    every = client.get("/api/v1/facets", params={"modality": "CT", "_facet_size": "max"}).json()["facets"]
    anatomy = {v["value"]: v["count"] for f in every if f["name"] == "anatomy" for v in f["results"]}
    assert facet_counts(html, "anatomy") == anatomy
    assert len(facet_counts(html, "host")) <= FACET_VALUES_SHOWN


def test_kept_pages_are_kept_per_target(client: TestClient) -> None:
    """A visitor without cookies is served kept bytes: a reply for one target never answers another."""
    url = "/datasets?dim=2D"
    for _ in range(2):
        assert 'id="search-region"' in client.get(url, headers=REGION).text
        assert 'id="search-region"' not in client.get(url, headers=RESULTS).text
        assert '<section id="results"' not in client.get(url, headers=PANELS).text


# -- folding, against brute force (pure) ------------------------------------------------------------------------
values = st.lists(
    st.tuples(st.integers(min_value=0, max_value=500), st.booleans()),
    min_size=0,
    max_size=40,
    unique_by=lambda t: t,
)


def make_facet(rows: list[tuple[int, bool]], truncated: bool) -> Facet:
    results = [
        FacetValue(
            value=f"v{i}",
            label=f"V{i}",
            count=count,
            selected=selected,
            toggle_url=f"/datasets?task=v{i}",
        )
        for i, (count, selected) in enumerate(rows)
    ]
    return Facet(name="task", label="Task", results=results, truncated=truncated)


@given(values, st.booleans(), st.sampled_from([[], ["task"], ["host"], ["host", "task"]]), st.booleans())
def test_a_facet_shows_its_first_values_and_every_selected_one(
    rows: list[tuple[int, bool]], truncated: bool, more: list[str], everything: bool
) -> None:
    facet = make_facet(rows, truncated)
    base = [("q", "x"), *(("_more", name) for name in more)]
    panel = facet_panel(facet, SearchFilter(), more, everything, base)
    unfolded = everything or "task" in more
    expected = [
        v.value for i, v in enumerate(facet.results) if unfolded or i < FACET_VALUES_SHOWN or v.selected
    ]
    assert [r.value.value for r in panel.rows] == expected
    folded_away = len(facet.results) - len(expected)
    assert (panel.more_url is not None) == (not unfolded and (folded_away > 0 or truncated))
    if panel.more_url:
        assert panel.more_url.endswith("_more=task") and "q=x" in panel.more_url
    assert panel.hidden == (None if truncated else folded_away)
    assert (panel.fewer_url is not None) == ("task" in more and not everything)
    if panel.fewer_url:
        assert "_more=task" not in panel.fewer_url
    # a value's link keeps every unfolded facet unfolded (unless _facet_size already unfolds them all)
    for row in panel.rows:
        kept = re.findall(r"_more=(\w+)", row.value.toggle_url)
        assert kept == ([] if everything else more)


def test_unknown_more_is_refused_with_the_facets_allowed(client: TestClient) -> None:
    reply = client.get("/datasets?_more=colour", headers=HTML)
    assert reply.status_code == 422
    assert "unknown facet" in reply.text and "modality" in reply.text
