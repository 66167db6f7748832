"""HTML pages, server side: every page renders, links its JSON twin, and works as plain links and forms."""

import json
import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi.testclient import TestClient

HTML = {"Accept": "text/html"}
HTMX = {"Accept": "text/html", "HX-Request": "true"}


class Page(HTMLParser):
    """The parts of a page the tests look at: links, alternate links, JSON-LD, forms and their inputs."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[dict[str, str]] = []
        self.alternates: list[dict[str, str]] = []
        self.scripts: list[tuple[dict[str, str], str]] = []
        self.forms: list[dict[str, Any]] = []
        self.inputs: list[dict[str, str]] = []
        self.tags: list[str] = []
        self._facet: str | None = None  # inside <details id="facet-...">: the facet's name
        self._script: dict[str, str] | None = None
        self._script_text: list[str] = []
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "details" and attributes.get("id", "").startswith("facet-"):
            self._facet = attributes["id"].removeprefix("facet-")
        if tag == "a" and "href" in attributes:
            if self._facet and "facet-value" in attributes.get("class", "").split():
                attributes["facet"] = self._facet
            self.links.append(attributes)
        elif tag == "link" and attributes.get("rel") == "alternate":
            self.alternates.append(attributes)
        elif tag == "script":
            self._script, self._script_text = attributes, []
        elif tag == "form":
            self.forms.append(attributes)
        elif tag in ("input", "select"):
            self.inputs.append(attributes)

    def handle_endtag(self, tag: str) -> None:
        if tag == "details":
            self._facet = None
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._script_text)))
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._script_text.append(data)
        else:
            self._text.append(data)

    @property
    def text(self) -> str:
        return re.sub(r"\s+", " ", " ".join(self._text))

    def json_twin(self) -> str:
        twins = [a["href"] for a in self.alternates if a.get("type") == "application/json"]
        assert len(twins) == 1, self.alternates
        return twins[0]

    def facet_links(self, facet: str) -> list[dict[str, str]]:
        """The value links of one facet (an <a class="facet-value"> in <details id="facet-NAME">)."""
        return [a for a in self.links if a.get("facet") == facet]


def get_page(client: TestClient, url: str, headers: dict[str, str] | None = None) -> Page:
    response = client.get(url, headers=headers or HTML)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    return Page(response.text)


def query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def region_count(html: str) -> int:
    match = re.search(r'id="search-region"[^>]*data-count="(\d+)"', html, re.S)
    assert match, "the search region carries its result count"
    return int(match.group(1))


# -- search page ------------------------------------------------------------------------------------------------
def test_root_sends_people_to_search(client: TestClient) -> None:
    response = client.get("/", headers=HTML, follow_redirects=False)
    assert response.status_code in (302, 303, 307)
    assert response.headers["location"] == "/datasets"


def test_search_page_links_its_json_twin_with_the_same_query(client: TestClient) -> None:
    page = get_page(client, "/datasets?modality=MRI&anatomy=brain&year__gte=2018")
    twin = page.json_twin()
    assert twin.startswith("/api/v1/datasets?")
    assert sorted(query(twin)) == sorted([("modality", "MR"), ("anatomy", "brain"), ("year__gte", "2018")])
    visible = [a for a in page.links if a["href"] == twin and a.get("type") == "application/json"]
    assert visible and "JSON" in page.text
    # the twin answers with the same count the page shows
    html = client.get("/datasets?modality=MRI&anatomy=brain&year__gte=2018", headers=HTML).text
    assert client.get(twin).json()["count"] == region_count(html)


def test_every_facet_is_a_list_of_plain_toggle_links_with_counts(client: TestClient) -> None:
    html = client.get("/datasets", headers=HTML).text
    page = Page(html)
    for facet in ("modality", "anatomy", "task", "dim", "access", "labeled", "host", "year", "size"):
        links = page.facet_links(facet)
        assert links, f"facet {facet} is shown"
        for link in links:
            # works without JavaScript (href); htmx takes the same href (hx-boost on the filters, not one
            # hx-get per value)
            assert link["href"].startswith("/datasets?") and "hx-get" not in link
            assert (facet, link["data-value"]) in query(link["href"])
    assert re.search(r'<aside [^>]*id="filters"[^>]*hx-boost="true"', html)


def test_toggle_link_count_is_the_count_after_toggling(client: TestClient) -> None:
    page = get_page(client, "/datasets?dim=3D")
    ct = next(a for a in page.facet_links("modality") if a["data-value"] == "CT")
    html = client.get("/datasets?dim=3D", headers=HTML).text
    shown = re.search(
        r'data-value="CT">.*?<span class="count">([\d,]+)</span>',
        html[html.index('id="facet-modality"') :],
        re.S,
    )
    assert shown
    after = client.get(ct["href"], headers=HTML)
    assert region_count(after.text) == int(shown.group(1).replace(",", ""))
    # and the selected value's link removes it again
    selected = next(a for a in Page(after.text).facet_links("modality") if a["data-value"] == "CT")
    assert "selected" in selected["class"]
    assert ("modality", "CT") not in query(selected["href"])
    assert ("dim", "3D") in query(selected["href"])


def test_anatomy_facet_is_indented_as_a_hierarchy(client: TestClient) -> None:
    html = client.get("/datasets?_facet_size=max", headers=HTML).text
    anatomy = html[html.index('id="facet-anatomy"') :]
    anatomy = anatomy[: anatomy.index("</details>")]
    depth = {
        value: int(d or 0)
        for d, value in re.findall(r'<li(?: style="--depth:(\d+)")?><a [^>]*data-value="([^"]+)"', anatomy)
    }
    assert len(depth) == anatomy.count("<li"), "every value is read"
    assert depth["lung"] > depth["thorax"] and depth["liver"] > depth["abdomen"]
    assert anatomy.index('data-value="thorax"') < anatomy.index('data-value="lung"')


def test_long_facets_are_folded_with_a_link_that_shows_all(client: TestClient) -> None:
    page = get_page(client, "/datasets?modality=CT")
    every = client.get("/api/v1/facets", params={"modality": "CT", "_facet_size": "max"}).json()["facets"]
    anatomy = next(f for f in every if f["name"] == "anatomy")["results"]
    folded = page.facet_links("anatomy")
    assert len(folded) < len(anatomy)
    more = [a for a in page.links if a.get("class") == "facet-more" and "_more=anatomy" in a["href"]]
    said = re.search(r"Show all anatomy(?: \((\d+) more\))?", page.text)
    assert len(more) == 1 and said
    assert said.group(1) is None or int(said.group(1)) == len(anatomy) - len(folded), "a count said is right"
    assert ("modality", "CT") in query(more[0]["href"]), "unfolding keeps the filter"

    expanded_html = client.get(more[0]["href"].split("#")[0], headers=HTML).text
    expanded = Page(expanded_html)
    shown = expanded.facet_links("anatomy")
    assert sorted(a["data-value"] for a in shown) == sorted(v["value"] for v in anatomy)
    # a value's link keeps the facet unfolded; "Show fewer" folds it again
    assert all(("_more", "anatomy") in query(a["href"]) for a in shown)
    fewer = re.findall(r'<a class="facet-more" href="([^"]+)"[^>]*>Show fewer</a>', expanded_html)
    assert len(fewer) == 1 and "_more" not in fewer[0] and "modality=CT" in fewer[0]
    # the form carries the unfolded facet into a new query; the JSON twin (API) does not take it
    assert {"type": "hidden", "name": "_more", "value": "anatomy"}.items() <= next(
        i for i in expanded.inputs if i.get("name") == "_more"
    ).items()
    assert "_more" not in expanded.json_twin()
    assert client.get("/datasets?_more=nonsense", headers=HTML).status_code == 422


def test_facet_size_max_still_unfolds_every_facet(client: TestClient) -> None:
    folded = get_page(client, "/datasets")
    everything = get_page(client, "/datasets?_facet_size=max")
    assert len(everything.facet_links("anatomy")) > len(folded.facet_links("anatomy"))
    assert len(everything.facet_links("host")) >= len(folded.facet_links("host"))


def test_active_filters_are_chips_that_remove_one_filter(client: TestClient) -> None:
    html = client.get(
        "/datasets?q=liver&modality=CT&task=seg&year__gte=2015&images__lte=5000", headers=HTML
    ).text
    chips = re.findall(r'<a class="chip" href="([^"]+)"', html)
    removed = [dict(query(href.replace("&amp;", "&"))) for href in chips]
    everything = {"q", "modality", "task", "year__gte", "images__lte"}
    assert len(chips) == len(everything)
    missing = [everything - set(r) for r in removed]
    assert all(len(m) == 1 for m in missing)
    assert sorted(m.pop() for m in missing) == sorted(everything)
    assert "Clear all" in html


def test_search_form_works_without_javascript(client: TestClient) -> None:
    page = get_page(client, "/datasets?modality=CT&sort=images")
    form = next(f for f in page.forms if f.get("id") == "search-form")
    assert form["method"].lower() == "get" and form["action"] == "/datasets"
    names = {i.get("name") for i in page.inputs}
    assert {"q", "sort", "prefer_open", "year__gte", "year__lte", "images__gte", "images__lte"} <= names
    # hidden inputs carry the current selections, so a new text search keeps them
    assert {"type": "hidden", "name": "modality", "value": "CT"}.items() <= next(
        i for i in page.inputs if i.get("name") == "modality"
    ).items()
    # what a browser submits with empty range boxes is accepted
    response = client.get(
        "/datasets?q=lung&modality=CT&year__gte=&year__lte=&images__gte=&images__lte=&sort=images",
        headers=HTML,
    )
    assert response.status_code == 200
    assert region_count(response.text) > 0


def test_result_cards_show_key_facts_and_link_the_dataset_page(client: TestClient) -> None:
    api = client.get("/api/v1/datasets", params={"modality": "CT", "page_size": 5}).json()
    html = client.get("/datasets?modality=CT", headers=HTML).text
    first = api["results"][0]
    assert f'href="/datasets/{first["slug"]}"' in html
    card = html[html.index(f'data-slug="{first["slug"]}"') :]
    card = card[: card.index("</article>")]
    for label in ("Year", "Images", "Modality", "Dim", "Anatomy", "Task"):
        assert f"<dt>{label}</dt>" in card
    assert "badge access-" in card


def test_next_page_link_and_paging(client: TestClient) -> None:
    page = get_page(client, "/datasets?modality=CT")
    nexts = [a for a in page.links if a.get("rel") == "next"]
    assert len(nexts) == 1
    second = client.get(nexts[0]["href"], headers=HTML)
    assert second.status_code == 200
    assert "Datasets 26" in second.text
    assert Page(second.text).json_twin().startswith("/api/v1/datasets?")
    assert ("_next", dict(query(nexts[0]["href"]))["_next"]) in query(Page(second.text).json_twin())


def test_near_matches_say_what_they_miss(client: TestClient) -> None:
    html = client.get("/datasets?modality=CT&anatomy=brain&task=seg&access=open", headers=HTML).text
    assert "Near matches" in html
    assert re.search(r'<ul class="missed"[^>]*>\s*<li>(access|modality|anatomy|task) is ', html)


def test_htmx_request_gets_only_the_region(client: TestClient) -> None:
    response = client.get("/datasets?modality=CT", headers=HTMX)
    assert response.status_code == 200
    assert "<html" not in response.text and "<body" not in response.text
    assert 'id="search-region"' in response.text
    assert response.headers["hx-push-url"] == "/datasets?modality=CT"
    assert "HX-Request" in response.headers["vary"]
    # the alternate link in <head> is refreshed out of band
    assert 'hx-swap-oob="true"' in response.text


def test_htmx_history_restore_gets_the_full_page(client: TestClient) -> None:
    for headers in (
        {**HTMX, "HX-History-Restore-Request": "true"},
        {"Accept": "text/html", "HX-History-Restore-Request": "true"},
    ):
        response = client.get("/datasets?modality=CT", headers=headers)
        assert response.status_code == 200
        assert response.text.lstrip().lower().startswith("<!doctype html>")
        assert response.text.count('id="search-region"') == 1


def test_everything_is_escaped(client: TestClient) -> None:
    html = client.get("/datasets", params={"q": '<script>alert("x")</script>'}, headers=HTML).text
    assert '<script>alert("x")</script>' not in html
    assert "&lt;script&gt;" in html


def test_bad_input_renders_an_error_page_and_an_htmx_fragment(client: TestClient) -> None:
    response = client.get("/datasets?modality=nonsense", headers=HTML)
    assert response.status_code == 422
    assert "<html" in response.text and "unknown modality" in response.text
    fragment = client.get("/datasets?year__gte=2020&year__lte=2010", headers=HTMX)
    assert fragment.status_code == 422
    assert "<html" not in fragment.text and 'role="alert"' in fragment.text
    assert "year__gte is larger than year__lte" in fragment.text


# -- dataset page -----------------------------------------------------------------------------------------------
@pytest.fixture
def some_dataset(client: TestClient) -> dict[str, Any]:
    body = client.get("/api/v1/datasets", params={"modality": "CT", "sort": "images", "page_size": 1}).json()
    return client.get(body["results"][0]["api_url"]).json()


def test_dataset_page_shows_the_normalised_facts_and_raw_rows(
    client: TestClient, some_dataset: dict[str, Any]
) -> None:
    slug = some_dataset["slug"]
    page = get_page(client, f"/datasets/{slug}")
    assert page.json_twin() == f"/api/v1/datasets/{slug}"
    assert any(a["href"] == f"/api/v1/datasets/{slug}" for a in page.links)
    text = page.text
    assert some_dataset["name"] in text
    assert some_dataset["description"] in text
    assert some_dataset["access_next_step"].split(".")[0] in text
    # raw survey rows verbatim
    assert "Source rows, verbatim" in text
    for record in some_dataset["raw_records"]:
        for key, value in record.items():
            assert key in text
            if isinstance(value, str) and value.strip():
                assert re.sub(r"\s+", " ", value).strip() in text
    # modality values link into the filtered search
    assert any(a["href"] == "/datasets?modality=CT" for a in page.links)


def test_dataset_page_has_schema_org_json_ld(client: TestClient, some_dataset: dict[str, Any]) -> None:
    page = get_page(client, f"/datasets/{some_dataset['slug']}")
    blocks = [text for attrs, text in page.scripts if attrs.get("type") == "application/ld+json"]
    assert len(blocks) == 1
    data = json.loads(blocks[0])
    assert data["@type"] == "Dataset" and data["@context"] == "https://schema.org"
    assert data["name"] == some_dataset["name"]
    assert data["url"].startswith("http") and data["url"].endswith(f"/datasets/{some_dataset['slug']}")


def test_dataset_page_lists_quality_flags_with_descriptions(client: TestClient) -> None:
    body = client.get("/api/v1/datasets", params={"quality": "url_shared", "page_size": 1}).json()
    detail = client.get(body["results"][0]["api_url"]).json()
    html = client.get(detail["html_url"], headers=HTML).text
    for flag in detail["flags"]:
        assert flag["label"] in html
        if flag["description"]:
            assert flag["description"] in Page(html).text
    # a shared URL means other datasets are listed at the same page: they are linked
    for other in detail["same_url"]:
        assert f'href="/datasets/{other["slug"]}"' in html


def test_missing_dataset_renders_a_404_page(client: TestClient) -> None:
    response = client.get("/datasets/no-such-dataset-anywhere", headers=HTML)
    assert response.status_code == 404
    assert "<html" in response.text
    assert "Not found" in response.text and "no-such-dataset-anywhere" in response.text
    assert client.get("/datasets/no-such-dataset-anywhere").json()["status"] == 404


# -- statistics page --------------------------------------------------------------------------------------------
def test_statistics_page_embeds_its_data_and_a_table_fallback(client: TestClient) -> None:
    page = get_page(client, "/statistics")
    assert page.json_twin() == "/api/v1/statistics"
    data_blocks = [text for attrs, text in page.scripts if attrs.get("id") == "stats-data"]
    assert len(data_blocks) == 1
    data = json.loads(data_blocks[0])
    assert set(data["distributions"]) >= {"modality", "dim", "task", "anatomy", "access", "year"}
    assert data["taxonomy"]["children"]
    api = client.get("/api/v1/statistics").json()
    assert data["distributions"]["modality"] == api["distributions"]["modality"]
    # the numbers are also plain HTML links into the search (no JavaScript needed)
    modality_links = [a["href"] for a in page.links if a["href"].startswith("/datasets?modality=")]
    assert "/datasets?modality=CT" in modality_links
    assert any(a["href"].startswith("/datasets?dim=3D&modality=") for a in page.links)
    html = client.get("/statistics", headers=HTML).text
    for name in ("taxonomy", "modality", "dim", "task", "anatomy", "access", "year"):
        assert f'id="chart-{name}"' in html
