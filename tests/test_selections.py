"""Selections (the cart) and comparison: the JSON API, the cookie-held selection of the pages, compare flags."""

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.catalog.models import Dataset
from app.selections.pages import COOKIE
from app.selections.service import MAX_DATASETS

HTML = {"Accept": "text/html"}
HTMX = {"Accept": "text/html", "HX-Request": "true"}


def assert_envelope(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False and body["status"] == status and body["error"]
    assert isinstance(body["errors"], list)
    return body


def some_slugs(client: TestClient, n: int, **filters: str) -> list[str]:
    body = client.get("/api/v1/datasets", params={"page_size": n, "sort": "images", **filters}).json()
    slugs = [d["slug"] for d in body["results"]]
    assert len(slugs) == n
    return slugs


def nav_count(html: str) -> int:
    match = re.search(r'id="nav-selection"[^>]*>Selection <span class="nav-count">\((\d+)\)</span>', html)
    assert match, "the header links the selection with its size"
    return int(match.group(1))


# -- the JSON API -----------------------------------------------------------------------------------------------
def test_selection_crud(client: TestClient) -> None:
    a, b, c = some_slugs(client, 3, modality="CT")
    created = client.post("/api/v1/selections", json={"name": " Liver CT ", "dataset_slugs": [a, b, a]})
    assert created.status_code == 201, created.text
    body = created.json()
    selection_id = body["id"]
    assert len(selection_id) >= 32, "ids are unguessable"
    assert created.headers["location"] == f"/api/v1/selections/{selection_id}" == body["api_url"]
    assert body["name"] == "Liver CT"
    assert body["dataset_slugs"] == [a, b], "repeats are dropped, order is kept"
    assert [d["slug"] for d in body["datasets"]] == [a, b]
    assert all(d["access_next_step"] for d in body["datasets"])

    assert client.get(f"/api/v1/selections/{selection_id}").json()["dataset_slugs"] == [a, b]

    added = client.post(f"/api/v1/selections/{selection_id}/datasets", json={"slug": c})
    assert added.status_code == 200 and added.json()["dataset_slugs"] == [a, b, c]
    again = client.post(f"/api/v1/selections/{selection_id}/datasets", json={"slug": c})
    assert again.json()["dataset_slugs"] == [a, b, c], "adding twice changes nothing"

    removed = client.delete(f"/api/v1/selections/{selection_id}/datasets/{a}")
    assert removed.status_code == 200 and removed.json()["dataset_slugs"] == [b, c]
    assert_envelope(client.delete(f"/api/v1/selections/{selection_id}/datasets/{a}"), 404)

    replaced = client.put(f"/api/v1/selections/{selection_id}", json={"dataset_slugs": [c, a]})
    assert replaced.status_code == 200
    assert replaced.json()["dataset_slugs"] == [c, a] and replaced.json()["name"] is None
    assert replaced.json()["updated_at"] >= body["updated_at"]

    assert client.delete(f"/api/v1/selections/{selection_id}").status_code == 204
    assert_envelope(client.get(f"/api/v1/selections/{selection_id}"), 404)


def test_an_empty_body_creates_an_empty_selection(client: TestClient) -> None:
    body = client.post("/api/v1/selections").json()
    assert body["dataset_slugs"] == [] and body["totals"]["datasets"] == 0 and body["compare_url"] is None


def test_unknown_slugs_are_a_422_that_names_them(client: TestClient) -> None:
    (real,) = some_slugs(client, 1)
    body = assert_envelope(
        client.post("/api/v1/selections", json={"dataset_slugs": [real, "no-such-one", "nor-this"]}), 422
    )
    assert "'no-such-one'" in body["error"] and "'nor-this'" in body["error"]
    assert [e["loc"] for e in body["errors"]] == [["body", "dataset_slugs", 1], ["body", "dataset_slugs", 2]]

    selection_id = client.post("/api/v1/selections", json={"dataset_slugs": [real]}).json()["id"]
    body = assert_envelope(
        client.post(f"/api/v1/selections/{selection_id}/datasets", json={"slug": "nope"}), 422
    )
    assert "'nope'" in body["error"]
    body = assert_envelope(
        client.put(f"/api/v1/selections/{selection_id}", json={"dataset_slugs": ["x"]}), 422
    )
    assert "'x'" in body["error"]
    # nothing was changed by the refused requests
    assert client.get(f"/api/v1/selections/{selection_id}").json()["dataset_slugs"] == [real]


def test_bad_bodies_and_unknown_ids(client: TestClient) -> None:
    assert_envelope(client.post("/api/v1/selections", json={"dataset_slugs": "lits"}), 422)
    assert_envelope(client.post("/api/v1/selections", json={"dataset_slugs": [], "plan_id": "x"}), 422)
    assert_envelope(client.post("/api/v1/selections", content=b"{not json"), 422)
    unknown = "A" * 32
    assert_envelope(client.get(f"/api/v1/selections/{unknown}"), 404)
    assert_envelope(client.get("/api/v1/selections/" + "x" * 60), 404)
    assert_envelope(client.put(f"/api/v1/selections/{unknown}", json={"dataset_slugs": []}), 404)
    assert_envelope(client.post(f"/api/v1/selections/{unknown}/datasets", json={"slug": "a"}), 404)
    assert_envelope(client.delete(f"/api/v1/selections/{unknown}/datasets/a"), 404)
    assert_envelope(client.delete(f"/api/v1/selections/{unknown}"), 404)
    assert_envelope(client.get(f"/api/v1/selections/{unknown}/export.csv"), 404)


def test_a_selection_is_capped(client: TestClient, session: Session) -> None:
    slugs = list(session.scalars(select(Dataset.slug).order_by(Dataset.id).limit(MAX_DATASETS + 1)))
    # the seed catalog (under a thousand datasets once merged) is smaller than the cap: datasets made up for this test (the
    # transaction is undone afterwards) fill it to one over
    extra = [f"cap-filler-{n}" for n in range(MAX_DATASETS + 1 - len(slugs))]
    session.add_all(Dataset(slug=s, name=s, host="none", access="open", size_bucket="unknown") for s in extra)
    session.flush()
    slugs += extra
    assert len(slugs) == MAX_DATASETS + 1
    body = assert_envelope(client.post("/api/v1/selections", json={"dataset_slugs": slugs}), 422)
    assert f"at most {MAX_DATASETS:,} datasets" in body["error"] and f"{MAX_DATASETS + 1:,}" in body["error"]

    full = client.post("/api/v1/selections", json={"dataset_slugs": slugs[:MAX_DATASETS]})
    assert full.status_code == 201 and len(full.json()["datasets"]) == MAX_DATASETS
    body = assert_envelope(
        client.post(f"/api/v1/selections/{full.json()['id']}/datasets", json={"slug": slugs[-1]}), 422
    )
    assert "full" in body["error"]


def test_totals(client: TestClient) -> None:
    slugs = some_slugs(client, 4, modality="CT")
    slugs += [s for s in some_slugs(client, 2, size="unknown") if s not in slugs]
    details = [client.get(f"/api/v1/datasets/{s}").json() for s in slugs]
    totals = client.post("/api/v1/selections", json={"dataset_slugs": slugs}).json()["totals"]

    assert totals["datasets"] == len(slugs)
    assert totals["images_known"] == sum(d["images"] for d in details if d["images"] is not None)
    assert totals["images_unknown"] == sum(d["images"] is None for d in details) >= 1
    modalities = {v["value"]: v["count"] for v in totals["modalities"]}
    assert modalities["CT"] == sum("CT" in d["modalities"] for d in details) >= 4
    licences = {v["value"]: v["count"] for v in totals["licences"]}
    assert sum(licences.values()) == len(slugs)
    assert licences.get("unknown", 0) == sum(d["licence"] is None for d in details)
    access = {v["value"]: v["count"] for v in totals["access"]}
    assert sum(access.values()) == len(slugs)


def test_seeded_from_a_saved_plan(client: TestClient) -> None:
    presets = client.get("/api/v1/plans/presets")
    if presets.status_code != 200:
        pytest.skip("the MDFP planner is not mounted")
    spec = presets.json()["results"][0]["spec"]
    plan = client.post("/api/v1/plans", json={"spec": spec})
    assert plan.status_code == 201, plan.text
    plan_id = plan.json()["id"]
    from app.core.db import new_session
    from app.mdfp.service import plan_dataset_slugs

    with new_session() as db:
        expected = plan_dataset_slugs(db, plan_id)
    created = client.post("/api/v1/selections", json={"plan_id": plan_id})
    if len(expected) > MAX_DATASETS:
        assert_envelope(created, 422)
    else:
        assert created.status_code == 201, created.text
        assert created.json()["dataset_slugs"] == expected
    assert_envelope(client.post("/api/v1/selections", json={"plan_id": "no-such-plan"}), 404)


def test_openapi_names_every_operation_and_shows_examples(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    operations = {op["operationId"]: op for path in spec["paths"].values() for op in path.values()}
    for name in (
        "create_selection",
        "get_selection",
        "replace_selection",
        "add_to_selection",
        "remove_from_selection",
        "delete_selection",
        "compare_datasets",
        "export_search",
        "export_selection",
        "export_plan",
    ):
        assert name in operations, name
    body = operations["create_selection"]["requestBody"]["content"]["application/json"]
    assert body["examples"], "the create body documents examples"
    assert "/api/v1/datasets.{fmt}" in spec["paths"]


# -- comparison -------------------------------------------------------------------------------------------------
def test_compare_flags_which_fields_differ(client: TestClient) -> None:
    slugs = some_slugs(client, 3, modality="CT", access="open")
    details = [client.get(f"/api/v1/datasets/{s}").json() for s in slugs]
    body = client.get("/api/v1/compare", params=[("d", s) for s in slugs]).json()
    assert body["count"] == 3 and [d["slug"] for d in body["datasets"]] == slugs
    fields = {f["name"]: f for f in body["fields"]}
    assert set(fields) >= {
        "modalities", "dims", "anatomies", "tasks", "diseases", "images", "labeled", "access", "licence",
        "host", "year", "quality_flags",
    }  # fmt: skip
    assert fields["access"]["differs"] is False and fields["access"]["values"] == ["open"] * 3
    for name, field in fields.items():
        values = [d[name] for d in details]
        assert field["values"] == values, name
        comparable = {tuple(sorted(v)) if isinstance(v, list) else v for v in values}
        assert field["differs"] is (len(comparable) > 1), name
    assert fields["images"]["differs"], "the three largest open CT datasets differ in size"


def test_compare_ignores_order_within_lists(client: TestClient, session: Session) -> None:
    """Two catalog datasets list the same modalities in a different order: that is not a difference."""
    pair = session.execute(
        text(
            "SELECT a.slug AS a, b.slug AS b FROM dataset a JOIN dataset b ON a.id < b.id "
            "AND a.modalities <> b.modalities AND a.modalities @> b.modalities AND b.modalities @> a.modalities "
            "AND cardinality(a.modalities) = cardinality(b.modalities) LIMIT 1"
        )
    ).one_or_none()
    if pair is None:
        pytest.skip("the catalog has no two datasets listing the same modalities in another order")
    body = client.get("/api/v1/compare", params=[("d", pair.a), ("d", pair.a), ("d", pair.b)]).json()
    assert body["count"] == 2, "a repeated slug is compared once"
    modalities = next(f for f in body["fields"] if f["name"] == "modalities")
    assert modalities["values"][0] != modalities["values"][1]
    assert modalities["differs"] is False


@pytest.mark.parametrize("count", [0, 1, 7])
def test_compare_needs_two_to_six(client: TestClient, count: int) -> None:
    slugs = some_slugs(client, max(count, 1))[:count]
    body = assert_envelope(client.get("/api/v1/compare", params=[("d", s) for s in slugs]), 422)
    assert "2 to 6" in body["error"] and body["errors"][0]["loc"] == ["query", "d"]


def test_compare_names_unknown_slugs(client: TestClient) -> None:
    (real,) = some_slugs(client, 1)
    body = assert_envelope(client.get("/api/v1/compare", params=[("d", real), ("d", "nowhere")]), 422)
    assert "'nowhere'" in body["error"] and body["errors"][0]["loc"] == ["query", "d", 1]


def test_compare_page_highlights_the_rows_that_differ(client: TestClient) -> None:
    slugs = some_slugs(client, 2, modality="MR")
    api = client.get("/api/v1/compare", params=[("d", s) for s in slugs]).json()
    html = client.get("/compare", params=[("d", s) for s in slugs], headers=HTML).text
    shown = {
        field: cls for cls, field in re.findall(r'<tr class="(differs|same)" data-field="([a-z_]+)"', html)
    }
    assert shown == {f["name"]: "differs" if f["differs"] else "same" for f in api["fields"]}
    assert html.count('class="differs-mark"') == sum(f["differs"] for f in api["fields"])
    assert f'href="/api/v1/compare?d={slugs[0]}&amp;d={slugs[1]}"' in html, "the JSON twin is linked"
    bad = client.get("/compare?d=" + slugs[0], headers=HTML)
    assert bad.status_code == 422 and "2 to 6" in bad.text


# -- the pages: a selection held by a cookie ---------------------------------------------------------------------
def test_add_without_javascript_redirects_back_and_sets_a_cookie(client: TestClient) -> None:
    first, second = some_slugs(client, 2, modality="CT")
    assert nav_count(client.get("/datasets", headers=HTML).text) == 0
    response = client.post(
        "/selection/add",
        data={"slug": first, "next": "/datasets?modality=CT"},
        headers=HTML,
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/datasets?modality=CT"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "Path=/", "Max-Age="):
        assert attribute in cookie
    assert re.search(r"SameSite=lax", cookie, re.I)
    assert int(re.search(r"Max-Age=(\d+)", cookie).group(1)) >= 180 * 24 * 3600

    # the cookie keeps the selection across requests: the header count, the search cards, the page
    page = client.get("/datasets?modality=CT", headers=HTML).text
    assert nav_count(page) == 1
    card = page[page.index(f'data-slug="{first}"') :]
    assert 'action="/selection/remove"' in card[: card.index("</li>")]
    client.post(
        "/selection/add", data={"slug": second, "next": "/datasets"}, headers=HTML, follow_redirects=False
    )
    selection = client.get("/selection", headers=HTML).text
    assert nav_count(selection) == 2
    assert selection.index(f'data-slug="{first}"') < selection.index(f'data-slug="{second}"')
    assert "Before you can fetch it" in selection

    # a browser without the cookie has its own, empty selection
    with TestClient(client.app) as stranger:
        assert nav_count(stranger.get("/selection", headers=HTML).text) == 0


def test_htmx_add_swaps_the_button_and_updates_the_count_out_of_band(client: TestClient) -> None:
    first, second = some_slugs(client, 2, modality="MR")
    client.post("/selection/add", data={"slug": first, "next": "/datasets"}, headers=HTMX)
    response = client.post(
        "/selection/add", data={"slug": second, "next": "/datasets?modality=MR"}, headers=HTMX
    )
    assert response.status_code == 200
    assert "<html" not in response.text
    assert re.search(
        r'<form class="selection-toggle chosen"[^>]*data-slug="' + re.escape(second), response.text
    )
    assert 'value="/datasets?modality=MR"' in response.text, "the swapped form still knows where it is"
    oob = re.search(
        r'<a id="nav-selection"[^>]*hx-swap-oob="true"[^>]*>Selection <span class="nav-count">\((\d+)\)',
        response.text,
    )
    assert oob and oob.group(1) == "2"

    removed = client.post("/selection/remove", data={"slug": first, "next": "/datasets"}, headers=HTMX)
    assert 'action="/selection/add"' in removed.text and "(1)" in removed.text


def test_remove_on_the_selection_page_redraws_the_page_region(client: TestClient) -> None:
    first, second = some_slugs(client, 2)
    for slug in (first, second):
        client.post("/selection/add", data={"slug": slug}, headers=HTML, follow_redirects=False)
    region = client.post(
        "/selection/remove",
        data={"slug": first, "next": "/selection"},
        headers={**HTMX, "HX-Target": "selection-region"},
    )
    assert region.status_code == 200 and 'id="selection-region"' in region.text
    assert f'data-slug="{first}"' not in region.text and f'data-slug="{second}"' in region.text
    assert 'hx-swap-oob="true"' in region.text and "(1)" in region.text


def test_name_clear_and_unsafe_next(client: TestClient) -> None:
    (slug,) = some_slugs(client, 1)
    unsafe = client.post(
        "/selection/add",
        data={"slug": slug, "next": "//evil.example/x"},
        headers=HTML,
        follow_redirects=False,
    )
    assert unsafe.headers["location"] == "/selection", "only local paths are followed"
    named = client.post(
        "/selection/name", data={"name": "Chest <b>X-ray</b>"}, headers=HTML, follow_redirects=False
    )
    assert named.status_code == 303
    page = client.get("/selection", headers=HTML).text
    assert "Chest &lt;b&gt;X-ray&lt;/b&gt;" in page and "<b>X-ray</b>" not in page
    client.post("/selection/clear", headers=HTML, follow_redirects=False)
    page = client.get("/selection", headers=HTML).text
    assert nav_count(page) == 0 and f'data-slug="{slug}"' not in page


def test_add_unknown_slug_is_a_clear_error(client: TestClient) -> None:
    response = client.post("/selection/add", data={"slug": "no-such-dataset"}, headers=HTMX)
    assert response.status_code == 422 and "unknown dataset slug" in response.text
    assert "<html" not in response.text


def test_selection_page_links_exports_compare_and_its_json_twin(client: TestClient) -> None:
    slugs = some_slugs(client, 3)
    for slug in slugs:
        client.post("/selection/add", data={"slug": slug}, headers=HTML, follow_redirects=False)
    html = client.get("/selection", headers=HTML).text
    twin = re.search(r'<link rel="alternate" type="application/json" href="([^"]+)"', html).group(1)
    detail = client.get(twin).json()
    assert detail["dataset_slugs"] == slugs
    # exports hang below the read-only share link, never the owner key the twin's URL holds
    share = detail["share_url"]
    assert share != twin and f'href="{detail["share_page"]}"' in html
    for suffix in ("csv", "json", "bib", "jsonld", "manifest.json"):
        assert f'href="{share}/export.{suffix}"' in html
    compare = "/compare?" + "&amp;".join(f"d={s}" for s in slugs)
    assert f'href="{compare}"' in html


def test_search_page_offers_exports_and_compare(client: TestClient) -> None:
    html = client.get("/datasets?modality=MR&page_size=10&_next=eyJvIjogMTB9", headers=HTML).text
    for suffix in ("csv", "json", "bib", "jsonld", "manifest.json"):
        assert f'href="/api/v1/datasets.{suffix}?modality=MR"' in html, (
            "exports carry the filter, not the page"
        )
    assert 'id="compare-form"' in html and 'action="/compare"' in html
    assert html.count('form="compare-form"') == 10


def test_forms_posted_from_another_site_are_refused(client: TestClient) -> None:
    (slug,) = some_slugs(client, 1)
    response = client.post(
        "/selection/add",
        data={"slug": slug},
        headers={**HTML, "Sec-Fetch-Site": "cross-site"},
        follow_redirects=False,
    )
    assert response.status_code == 403 and "set-cookie" not in response.headers
    same = client.post(
        "/selection/add",
        data={"slug": slug},
        headers={**HTML, "Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert same.status_code == 303


def test_a_plans_datasets_can_be_added_to_the_selection(client: TestClient) -> None:
    presets = client.get("/api/v1/plans/presets")
    if presets.status_code != 200:
        pytest.skip("the MDFP planner is not mounted")
    plan = client.post("/api/v1/plans", json={"spec": presets.json()["results"][0]["spec"]}).json()
    from app.core.db import new_session
    from app.mdfp.service import plan_dataset_slugs

    with new_session() as db:
        final = plan_dataset_slugs(db, plan["id"])
    if not final or len(final) >= MAX_DATASETS:
        pytest.skip("the preset's final list is empty or larger than a selection")
    extra = next(s for s in some_slugs(client, 50) if s not in final)
    client.post("/selection/add", data={"slug": extra}, headers=HTML, follow_redirects=False)
    response = client.post(
        "/selection/add-plan", data={"plan_id": plan["id"]}, headers=HTML, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/selection"
    html = client.get("/selection", headers=HTML).text
    assert nav_count(html) == 1 + len(final)
    assert re.findall(r'<li class="selection-item" data-slug="([^"]+)"', html) == [extra, *final]
    missing = client.post("/selection/add-plan", data={"plan_id": "no-such-plan"}, headers=HTML)
    assert missing.status_code == 404


# -- slugs of datasets merged since they were stored ------------------------------------------------------------
def test_a_selection_holding_old_slugs_reads_and_changes_as_the_merged_datasets(
    client: TestClient, session: Session
) -> None:
    old, merged_into = session.execute(text("SELECT old_slug, slug FROM dataset_redirect LIMIT 1")).one()
    other = some_slugs(client, 1, modality="CT")[0]
    created = client.post("/api/v1/selections", json={"dataset_slugs": [other]}).json()
    # a selection saved before the merge holds the old slug
    session.execute(
        text("UPDATE selection SET dataset_slugs = :slugs WHERE id = :id"),
        {"slugs": [old, other], "id": created["id"]},
    )
    session.commit()

    detail = client.get(f"/api/v1/selections/{created['id']}").json()
    assert detail["dataset_slugs"] == [merged_into, other] and detail["missing_slugs"] == []
    assert [d["slug"] for d in detail["datasets"]] == [merged_into, other]

    # adding the dataset by either slug changes nothing; removing it by its current slug works
    again = client.post(f"/api/v1/selections/{created['id']}/datasets", json={"slug": old})
    assert again.status_code in (200, 201), again.text
    assert again.json()["dataset_slugs"] == [merged_into, other]
    removed = client.delete(f"/api/v1/selections/{created['id']}/datasets/{merged_into}")
    assert removed.status_code == 200, removed.text
    assert removed.json()["dataset_slugs"] == [other]

    # a list given with an old slug stores the current one, once
    replaced = client.put(f"/api/v1/selections/{created['id']}", json={"dataset_slugs": [old, merged_into]})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["dataset_slugs"] == [merged_into]
