"""The bundle pages over HTTP (no browser, no worker): the build form, the job page and its polled partial, the
list of this browser's bundles, and the errors a visitor can run into.

Jobs made here never reach a worker: their tasks go to a queue no worker consumes (a session worker may be
running for other modules), and each is cancelled at the end so that a worker's resume has nothing of ours to run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from bundle_fixtures import queue_for_this_process
from fastapi.testclient import TestClient

from app.bundles.api import OWNER_COOKIE
from app.core.templating import human_bytes

HTML = {"Accept": "text/html"}
HTMX = {"Accept": "text/html", "HX-Request": "true"}
MANUAL_ONLY = (
    "lits",
    "kits19",
)  # no source descriptor in the seed catalog: `manual` sources, nothing to fetch


@pytest.fixture(autouse=True)
def no_worker_runs_our_jobs() -> Iterator[None]:
    with queue_for_this_process("imagingx-test-nobody-listens"):
        yield


@pytest.fixture
def web(client: TestClient) -> Iterator[TestClient]:
    """A browser's worth of cookies; every job it started is cancelled afterwards."""
    yield client
    for job in client.get("/api/v1/bundles").json()["results"]:
        if job["state"] not in ("done", "failed", "cancelled"):
            client.post(f"/api/v1/bundles/{job['id']}/cancel")


def select(web: TestClient, *slugs: str) -> None:
    for slug in slugs:
        response = web.post("/selection/add", data={"slug": slug}, headers=HTML, follow_redirects=False)
        assert response.status_code == 303


def build(web: TestClient, **fields: Any) -> Any:
    return web.post("/bundles", data=fields, headers=HTML, follow_redirects=False)


def job_id_of(response: Any) -> str:
    assert response.status_code == 303, response.text[:2000]
    match = re.fullmatch(r"/bundles/([\w-]+)", response.headers["location"])
    assert match, response.headers["location"]
    return match.group(1)


def test_selection_and_plan_pages_offer_the_build_form(web: TestClient) -> None:
    assert 'id="build-bundle"' not in web.get("/selection", headers=HTML).text, "nothing selected, no form"
    select(web, *MANUAL_ONLY)
    page = web.get("/selection", headers=HTML).text
    form = page[page.index('id="build-bundle"') :]
    assert '<form method="post" action="/bundles"' in form
    assert 'name="from_selection" value="1"' in form
    for name in ("name", "test_fraction", "val_fraction", "slices_2d"):
        assert f'name="{name}"' in form
    assert '<option value="axial">' in form

    plan = web.post("/api/v1/plans", json={"spec": {"target_modalities": ["CT"]}}).json()
    plan_page = web.get(f"/plans/{plan['id']}", headers=HTML).text
    assert f'name="plan_id" value="{plan["id"]}"' in plan_page
    assert 'href="/bundles"' in plan_page, "the header links the bundles list"


def test_build_from_the_selection_redirects_to_the_job_and_remembers_the_browser(web: TestClient) -> None:
    select(web, *MANUAL_ONLY)
    response = build(
        web, from_selection="1", name="Kidney CT", test_fraction="0.3", val_fraction="0.1", slices_2d="axial"
    )
    job_id = job_id_of(response)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{OWNER_COOKIE}=")
    assert "HttpOnly" in cookie and "Path=/" in cookie and re.search(r"SameSite=lax", cookie, re.I)

    status = web.get(f"/api/v1/bundles/{job_id}").json()
    assert status["name"] == "Kidney CT"
    assert [s["slug"] for s in status["sources"]] == list(MANUAL_ONLY)
    options = status["request"]["options"]
    assert (options["test_fraction"], options["val_fraction"], options["slices_2d"]) == (0.3, 0.1, "axial")

    page = web.get(f"/bundles/{job_id}", headers=HTML)
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    html = page.text
    assert f'<link rel="alternate" type="application/json" href="/api/v1/bundles/{job_id}">' in html
    assert "<h1>Kidney CT</h1>" in html
    for slug in MANUAL_ONLY:
        row = html[html.index(f'data-source="{slug}"') :]
        row = row[: row.index("</tr>")]
        assert 'data-state="manual"' in row and "No automated source" in row
    assert 'action="/bundles/' + job_id + '/cancel"' in html

    # a second bundle keeps the same owner; the list shows both, newest first
    second = build(web, from_selection="1")
    assert "set-cookie" not in second.headers
    second_id = job_id_of(second)
    listing = web.get("/bundles", headers=HTML).text
    assert listing.index(f'data-job="{second_id}"') < listing.index(f'data-job="{job_id}"')
    assert 'href="/api/v1/bundles"' in listing

    # another browser sees none of them
    with TestClient(web.app) as stranger:
        empty = stranger.get("/bundles", headers=HTML).text
        assert "data-job=" not in empty and "private to whoever holds their id" in empty


def test_build_from_a_plan(web: TestClient) -> None:
    plan = web.post("/api/v1/plans", json={"spec": {"target_modalities": ["CT"]}}).json()
    job_id = job_id_of(build(web, plan_id=plan["id"], nnunet_dataset_id="742"))
    status = web.get(f"/api/v1/bundles/{job_id}").json()
    assert status["plan_id"] == plan["id"] and status["sources"]
    assert status["request"]["options"]["nnunet_dataset_id"] == 742  # the form's id is the request's
    assert f'href="/plans/{plan["id"]}"' in web.get(f"/bundles/{job_id}", headers=HTML).text


@pytest.mark.parametrize(
    ("fields", "status", "messages"),
    [
        ({"test_fraction": "lots"}, 422, ["valid number"]),
        ({"test_fraction": "0.95"}, 422, ["less than or equal to 0.9"]),
        ({"test_fraction": "0.6", "val_fraction": "0.4"}, 422, ["at least 10 % for training"]),
        ({"name": "a/b"}, 422, ["use letters, digits"]),
        ({"slices_2d": "diagonal"}, 422, ["axial"]),
        ({"nnunet_dataset_id": "1000"}, 422, ["less than or equal to 999"]),
        ({"plan_id": "no-such-plan"}, 404, ["no-such-plan"]),
        ({"dataset": "no-such-dataset"}, 422, ["no-such-dataset"]),
        ({}, 422, ["No datasets were sent"]),
    ],
)
def test_invalid_forms_come_back_with_the_message_and_what_was_typed(
    web: TestClient, fields: dict[str, str], status: int, messages: list[str]
) -> None:
    if "plan_id" not in fields and "dataset" not in fields and fields:
        fields = {"dataset": "lits", **fields}
    response = build(web, **fields)
    assert response.status_code == status, response.text[:2000]
    assert "The bundle was not started" in response.text
    for message in messages:
        assert message in response.text
    for name, value in fields.items():
        if name in ("name", "test_fraction", "val_fraction", "nnunet_dataset_id"):
            assert f'value="{value}"' in response.text.replace("&#x2F;", "/"), name
    assert web.get("/api/v1/bundles").json()["results"] == [], "no job was started"


def test_an_empty_selection_is_explained(web: TestClient) -> None:
    response = build(web, from_selection="1")
    assert response.status_code == 422 and "Your selection is empty" in response.text


def test_the_status_partial_polls_until_the_job_finishes(web: TestClient) -> None:
    job_id = job_id_of(build(web, dataset="lits"))
    running = web.get(f"/bundles/{job_id}/status", headers=HTMX)
    assert running.status_code == 200 and "<html" not in running.text
    assert re.search(r'id="bundle-status"[^>]*hx-get="/bundles/' + job_id + '/status"', running.text)
    assert 'hx-trigger="every 1s"' in running.text
    assert '<meta http-equiv="refresh"' in web.get(f"/bundles/{job_id}", headers=HTML).text  # without JS
    listing = web.get("/bundles", headers=HTMX).text
    assert "<html" not in listing and 'hx-trigger="every 2s"' in listing, "the list refreshes while one runs"

    cancelled = web.post(f"/bundles/{job_id}/cancel", headers=HTML, follow_redirects=False)
    assert cancelled.status_code == 303 and cancelled.headers["location"] == f"/bundles/{job_id}"
    finished = web.get(f"/bundles/{job_id}/status", headers=HTMX).text
    assert 'data-state="cancelled"' in finished
    assert "hx-trigger" not in finished and "hx-get" not in finished, "a finished job stops the polling"
    assert "hx-trigger" not in web.get("/bundles", headers=HTMX).text
    page = web.get(f"/bundles/{job_id}", headers=HTML).text
    assert "/cancel" not in page and 'http-equiv="refresh"' not in page
    # cancelling again (a second tab, a double click) just shows the job
    again = web.post(f"/bundles/{job_id}/cancel", headers=HTML, follow_redirects=False)
    assert again.status_code == 303


def test_unknown_bundles_are_404(web: TestClient) -> None:
    page = web.get("/bundles/no-such-bundle", headers=HTML)
    assert page.status_code == 404 and "Not found" in page.text
    partial = web.get("/bundles/no-such-bundle/status", headers=HTMX)
    assert partial.status_code == 404 and "<html" not in partial.text
    assert web.get("/bundles/" + "x" * 300, headers=HTML).status_code == 404
    assert web.post("/bundles/no-such-bundle/cancel", headers=HTML).status_code == 404


def test_cross_site_posts_are_refused(web: TestClient) -> None:
    response = web.post(
        "/bundles",
        data={"dataset": "lits"},
        headers={**HTML, "Sec-Fetch-Site": "cross-site"},
        follow_redirects=False,
    )
    assert response.status_code == 403 and "set-cookie" not in response.headers
    assert web.get("/api/v1/bundles").json()["results"] == []
    job_id = job_id_of(build(web, dataset="lits"))
    cancel = web.post(f"/bundles/{job_id}/cancel", headers={**HTML, "Sec-Fetch-Site": "cross-site"})
    assert cancel.status_code == 403
    assert web.get(f"/api/v1/bundles/{job_id}").json()["state"] == "queued"


def test_sizes_read_as_people_write_them() -> None:
    assert [human_bytes(n) for n in (0, 999, 1000, 317_400, 2_500_000_000, 7 * 10**15)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "317.4 kB",
        "2.5 GB",
        "7000.0 TB",
    ]
