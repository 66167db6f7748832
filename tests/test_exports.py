"""Exports of a search, a selection and a plan: every format parsed back, and the rows streamed in chunks."""

import csv
import io
import json
import math
import re
from collections.abc import Iterator
from typing import Any

import bibtexparser
import httpx
import pytest
from bibtexparser import middlewares
from fastapi.testclient import TestClient
from pyld import jsonld
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from app.catalog.models import Dataset
from app.search.schemas import SearchFilter
from app.search.service import ordered_dataset_ids
from app.selections import exports
from app.selections.exports import CROISSANT_SPEC, CSV_COLUMNS, bibtex_key, bibtex_url
from app.selections.schemas import ExportFormat
from app.sources.citations import citation_fields

SCHEMA = "https://schema.org/"
FILTER = {"modality": "MR", "anatomy": "brain"}


def search_slugs(client: TestClient, params: dict[str, str]) -> list[str]:
    """Every slug of a search, in order, by following next_url through the paged JSON API."""
    slugs: list[str] = []
    url: str | None = "/api/v1/datasets?" + str(httpx.QueryParams({**params, "page_size": "200"}))
    while url:
        body = client.get(url).json()
        slugs += [d["slug"] for d in body["results"]]
        url = body["next_url"]
    return slugs


def export(client: TestClient, path: str, params: dict[str, str] | None = None) -> httpx.Response:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    disposition = response.headers["content-disposition"]
    assert re.fullmatch(r'attachment; filename="[A-Za-z0-9_.-]+"', disposition), disposition
    return response


def parse_bibtex(text: str, decode: bool) -> Any:
    library = bibtexparser.parse_string(
        text, append_middleware=[middlewares.LatexDecodingMiddleware()] if decode else []
    )
    assert not library.failed_blocks, [b.error for b in library.failed_blocks]
    return library


@pytest.fixture(scope="module")
def expected(configured_services: None) -> dict[str, Any]:
    """The brain MR search as the JSON API lists it: slugs in order and each dataset's detail."""
    from app.main import create_app

    with TestClient(create_app()) as client:
        slugs = search_slugs(client, FILTER)
        details = {s: client.get(f"/api/v1/datasets/{s}").json() for s in slugs}
    assert len(slugs) > 20
    return {"slugs": slugs, "details": details}


# -- search exports, each format parsed back --------------------------------------------------------------------
def test_csv_export_of_a_search(client: TestClient, expected: dict[str, Any]) -> None:
    response = export(client, "/api/v1/datasets.csv", FILTER)
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].endswith('.csv"')
    reader = csv.DictReader(io.StringIO(response.text, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS, "stable columns"
    rows = list(reader)
    assert [r["slug"] for r in rows] == expected["slugs"], "same datasets, same order as the search"
    for row in rows:
        detail = expected["details"][row["slug"]]
        assert row["name"] == detail["name"]
        assert row["modalities"].split("; ") == detail["modalities"]
        assert row["year"] == (str(detail["year"]) if detail["year"] else "")
        assert row["images"] == ("" if detail["images"] is None else str(detail["images"]))
        assert row["labeled"] == {True: "true", False: "false", None: ""}[detail["labeled"]]
        assert row["access_next_step"] == detail["access_next_step"]
        assert row["portal_url"].endswith(f"/datasets/{row['slug']}")
        assert row["landing_page"] == (detail["url"] or "")


def test_json_export_of_a_search(client: TestClient, expected: dict[str, Any]) -> None:
    body = export(client, "/api/v1/datasets.json", FILTER).json()
    assert body["ok"] is True and body["kind"] == "search"
    assert body["count"] == len(expected["slugs"]) == len(body["results"])
    assert [r["slug"] for r in body["results"]] == expected["slugs"]
    assert body["filter"]["terms"] == {"modality": ["MR"], "anatomy": ["brain"]}
    first = body["results"][0]
    assert first["access_next_step"] == expected["details"][first["slug"]]["access_next_step"]


def test_bibtex_export_of_a_search(client: TestClient, expected: dict[str, Any]) -> None:
    response = export(client, "/api/v1/datasets.bib", FILTER)
    assert response.headers["content-type"].startswith("application/x-bibtex")
    raw = parse_bibtex(response.text, decode=False)
    decoded = parse_bibtex(response.text, decode=True)
    assert [e.key for e in raw.entries] == [bibtex_key(s) for s in expected["slugs"]]
    assert len({e.key for e in raw.entries}) == len(raw.entries), "keys are unique"
    for raw_entry, entry, slug in zip(raw.entries, decoded.entries, expected["slugs"], strict=True):
        detail = expected["details"][slug]
        assert entry.entry_type == "misc"
        assert entry.fields_dict["title"].value == detail["name"]
        # a data citation the source states (IDC) gives the year the data was published; else the survey's
        stated = citation_fields(detail["source"]["facts"]).get("year")
        year = stated or (str(detail["year"]) if detail["year"] else None)
        if year:
            assert entry.fields_dict["year"].value == year
        if stated:
            assert entry.fields_dict["doi"].value == detail["source"]["facts"]["doi"]
        landing = detail["url"] or f"http://testserver/datasets/{slug}"
        assert raw_entry.fields_dict["url"].value == bibtex_url(landing)
        assert slug in entry.fields_dict["note"].value


def test_json_ld_export_is_a_data_catalog_of_croissant_datasets(
    client: TestClient, expected: dict[str, Any]
) -> None:
    response = export(client, "/api/v1/datasets.jsonld", FILTER)
    assert response.headers["content-type"] == "application/ld+json"
    document = json.loads(response.text)
    assert document["@type"] in ("DataCatalog", "sc:DataCatalog")
    datasets = document["dataset"]
    assert [d["identifier"] for d in datasets] == expected["slugs"]
    for item in datasets:
        assert item["@type"] in ("Dataset", "sc:Dataset")
        assert item["conformsTo"] == CROISSANT_SPEC
        assert item["@context"]["cr"] == "http://mlcommons.org/croissant/"
        assert item["name"] and item["url"] and item["description"]
        assert item["citeAs"].startswith("@misc{")
    # the document is valid JSON-LD whose types are schema.org's (expanded offline: every context is inline)
    (catalog,) = jsonld.expand(document)
    assert catalog["@type"] == [SCHEMA + "DataCatalog"]
    members = catalog[SCHEMA + "dataset"]
    assert len(members) == len(datasets)
    assert all(m["@type"] == [SCHEMA + "Dataset"] for m in members)
    assert all(m["http://purl.org/dc/terms/conformsTo"][0]["@value"] == CROISSANT_SPEC for m in members)
    licensed = [m for m in members if SCHEMA + "license" in m]
    assert all(m[SCHEMA + "license"][0]["@value"].startswith("https://spdx.org/licenses/") for m in licensed)


def test_manifest_export_says_what_to_fetch_and_how(client: TestClient, expected: dict[str, Any]) -> None:
    response = export(client, "/api/v1/datasets.manifest.json", FILTER)
    assert response.headers["content-disposition"].endswith('.manifest.json"')
    manifest = response.json()
    assert manifest["manifest_version"] == 1 and manifest["kind"] == "search"
    entries = manifest["datasets"]
    assert [e["slug"] for e in entries] == expected["slugs"]
    for entry in entries:
        detail = expected["details"][entry["slug"]]
        assert entry["landing_page"] == detail["url"]
        assert entry["access"] == detail["access"]
        assert entry["access_next_step"] == detail["access_next_step"]
        assert entry["automatic"] is (entry["source"] is not None)
    summary = manifest["summary"]
    assert summary["datasets"] == len(entries) == sum(summary["by_access"].values())
    assert summary["automatic"] + summary["manual"] == len(entries)


def test_export_of_an_empty_result_is_still_well_formed(client: TestClient) -> None:
    params = {"q": "zzqxjv"}
    assert list(csv.reader(io.StringIO(export(client, "/api/v1/datasets.csv", params).text))) == [
        list(CSV_COLUMNS)
    ]
    assert export(client, "/api/v1/datasets.json", params).json()["count"] == 0
    assert json.loads(export(client, "/api/v1/datasets.jsonld", params).text)["dataset"] == []
    assert parse_bibtex(export(client, "/api/v1/datasets.bib", params).text, decode=False).entries == []
    assert export(client, "/api/v1/datasets.manifest.json", params).json()["summary"]["datasets"] == 0


def test_export_errors_use_the_envelope(client: TestClient) -> None:
    for url, status, message in (
        ("/api/v1/datasets.xml", 422, "csv"),
        ("/api/v1/datasets.csv?modality=bogus", 422, "unknown modality"),
        ("/api/v1/datasets.csv?colour=red", 422, "unknown parameter"),
        ("/api/v1/selections/" + "Z" * 32 + "/export.bib", 404, "not found"),
        ("/api/v1/plans/no-such-plan/export.csv", 404, "not found"),
    ):
        response = client.get(url)
        assert response.status_code == status, url
        body = response.json()
        assert body["ok"] is False and message in body["error"], (url, body)


# -- selection and plan exports ---------------------------------------------------------------------------------
def test_selection_exports_keep_the_selection_order(client: TestClient, expected: dict[str, Any]) -> None:
    slugs = list(reversed(expected["slugs"][:5]))
    selection = client.post(
        "/api/v1/selections", json={"name": "Brain & MR {test}", "dataset_slugs": slugs}
    ).json()
    links = selection["exports"]
    assert set(links) == {"csv", "json", "bib", "jsonld", "manifest"}

    csv_text = export(client, links["csv"]).text
    assert [r["slug"] for r in csv.DictReader(io.StringIO(csv_text, newline=""))] == slugs
    body = export(client, links["json"]).json()
    assert body["kind"] == "selection" and body["selection"]["name"] == "Brain & MR {test}"
    assert [r["slug"] for r in body["results"]] == slugs
    assert [e.key for e in parse_bibtex(export(client, links["bib"]).text, False).entries] == [
        bibtex_key(s) for s in slugs
    ]
    assert [d["identifier"] for d in json.loads(export(client, links["jsonld"]).text)["dataset"]] == slugs
    assert [d["slug"] for d in export(client, links["manifest"]).json()["datasets"]] == slugs
    assert "imagingx-selection-Brain-MR-test" in export(client, links["csv"]).headers["content-disposition"]


def test_plan_export_lists_the_plans_final_datasets(client: TestClient) -> None:
    presets = client.get("/api/v1/plans/presets")
    if presets.status_code != 200:
        pytest.skip("the MDFP planner is not mounted")
    plan = client.post("/api/v1/plans", json={"spec": presets.json()["results"][0]["spec"]})
    assert plan.status_code == 201, plan.text
    from app.core.db import new_session
    from app.mdfp.service import plan_dataset_slugs

    with new_session() as db:
        final = plan_dataset_slugs(db, plan.json()["id"])
    rows = csv.DictReader(io.StringIO(export(client, f"/api/v1/plans/{plan.json()['id']}/export.csv").text))
    assert [r["slug"] for r in rows] == final
    manifest = export(client, f"/api/v1/plans/{plan.json()['id']}/export.manifest.json").json()
    assert manifest["kind"] == "plan" and len(manifest["datasets"]) == len(final)


# -- escaping ---------------------------------------------------------------------------------------------------
NASTY = r"Lab {A} 50% & $5 #1 a_b ^x ~y \z"
_UNESCAPE = {
    r"\textbackslash{}": "\\",
    r"\textbraceleft{}": "{",
    r"\textbraceright{}": "}",
    r"\textasciicircum{}": "^",
    r"\textasciitilde{}": "~",
    r"\%": "%",
    r"\&": "&",
    r"\$": "$",
    r"\#": "#",
    r"\_": "_",
}


def unescape(value: str) -> str:
    pattern = "|".join(re.escape(k) for k in _UNESCAPE)
    return re.sub(pattern, lambda m: _UNESCAPE[m.group()], value)


def transient_dataset(**values: Any) -> Dataset:
    defaults: dict[str, Any] = dict(
        slug="odd slug/with spaces", name=NASTY, organisation=NASTY, year=2021, url="http://x.org/a b\\#c{d}",
        dims=["3D"], modalities=["CT"], anatomies=["liver"], tasks=["segmentation"], diseases=[],
        labeled=True, access="open", host="zenodo", licence=None, images=None, formats=[], source=None,
        quality_flags=[], completeness=0.5,
    )  # fmt: skip
    return Dataset(**{**defaults, **values})


def test_bibtex_escapes_special_characters_and_keeps_braces_balanced() -> None:
    links = exports.Links("http://portal.test")
    entry = exports.bibtex_entry(transient_dataset(), links)
    (parsed,) = parse_bibtex(entry, decode=False).entries
    assert re.fullmatch(r"[A-Za-z0-9_:.-]+", parsed.key) and parsed.key == bibtex_key("odd slug/with spaces")
    assert parsed.key != bibtex_key("odd-slug-with-spaces"), "cleaned keys keep a hash of the original slug"
    title = parsed.fields_dict["title"].value
    assert title.startswith("{") and title.endswith("}"), "the title keeps its capitals"
    assert unescape(title[1:-1]) == NASTY
    assert unescape(parsed.fields_dict["author"].value[1:-1]) == NASTY
    assert parsed.fields_dict["url"].value == "http://x.org/a%20b%5C#c%7Bd%7D"
    assert set(parsed.fields_dict) == {"title", "author", "year", "url", "howpublished", "note", "keywords"}


def test_a_recorded_citation_wins() -> None:
    links = exports.Links("http://portal.test")
    cited = transient_dataset(
        source={
            "citation": {"author": "Bilic, Patrick and others", "title": "The LiTS benchmark"},
            "doi": "10.1/x",
        }
    )
    (parsed,) = parse_bibtex(exports.bibtex_entry(cited, links), decode=True).entries
    assert parsed.fields_dict["author"].value == "Bilic, Patrick and others"
    assert parsed.fields_dict["title"].value == "The LiTS benchmark"
    assert parsed.fields_dict["doi"].value == "10.1/x"


def test_csv_cells_that_look_like_formulas_are_made_text() -> None:
    links = exports.Links("http://portal.test")
    lines = "".join(
        exports.render_csv([transient_dataset(name="=HYPERLINK(1)", organisation="@x")], None, links)  # type: ignore[arg-type]
    )
    (row,) = csv.DictReader(io.StringIO(lines, newline=""))
    assert row["name"] == "'=HYPERLINK(1)" and row["organisation"] == "'@x"
    assert row["slug"] == "odd slug/with spaces" and row["images"] == "" and row["labeled"] == "true"


# -- streaming --------------------------------------------------------------------------------------------------
class QueryLog:
    """The dataset SELECTs an engine runs, with how many rows each returned."""

    def __init__(self, session: Session) -> None:
        self.engine = session.get_bind()
        self.rows: list[int] = []

    def __enter__(self) -> "QueryLog":
        event.listen(self.engine, "after_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "after_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if re.search(r"\bFROM dataset\b", statement) and "dataset.slug" in statement:
            self.rows.append(cursor.rowcount)


def test_export_reads_the_catalog_chunk_by_chunk(session: Session) -> None:
    """Exporting everything never fetches more than a chunk of rows at once, and reads only as it is consumed."""
    total = session.scalar(select(func.count()).select_from(Dataset))
    ids = ordered_dataset_ids(session, SearchFilter())
    assert len(ids) == total
    subject = exports.ExportSubject(kind="search", title="All datasets", filename="all")
    chunk = 100
    with QueryLog(session) as log:
        stream: Iterator[bytes] = exports.render(
            ExportFormat.csv, exports.iter_datasets(session, "id", ids, chunk), subject, "http://t"
        )
        assert log.rows == [], "nothing is read before the first byte is asked for"
        first = next(stream)
        assert len(log.rows) <= math.ceil(exports.FLUSH_BYTES / 300 / chunk) + 1, (
            "only what the first piece needs"
        )
        pieces = [first, *stream]
    assert len(log.rows) == math.ceil(total / chunk)
    assert max(log.rows) <= chunk, "never more than one chunk of rows in memory"
    assert len(pieces) > 3, "the body is sent in pieces, not built whole"
    assert all(len(p) < exports.FLUSH_BYTES + 10_000 for p in pieces)
    text = b"".join(pieces).decode()
    assert text.count("\r\n") == total + 1


def test_export_responses_stream_over_http(live_server: str) -> None:
    with (
        httpx.Client(base_url=live_server, timeout=30) as http,
        http.stream("GET", "/api/v1/datasets.csv") as response,
    ):
        assert response.status_code == 200
        assert "content-length" not in response.headers, "a streamed body has no length up front"
        assert response.headers.get("transfer-encoding") == "chunked"
        pieces = list(response.iter_raw())
    assert len(pieces) > 1
    assert b"".join(pieces).decode().startswith(",".join(CSV_COLUMNS))
