"""Slugs of records merged into another keep answering: the dataset page (301) and the API (308) redirect to
the merged record, and `canonical_slug` maps any published slug to the record that holds it now."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.catalog.importer import legacy_slugs
from app.catalog.models import Dataset, DatasetRedirect
from app.catalog.service import canonical_slug, canonical_slugs, import_catalog


def _merged_part(session: Session, name: str) -> tuple[str, str]:
    """(an old slug, the merged record's slug) for the dataset called `name`."""
    dataset = session.execute(select(Dataset).where(Dataset.name == name)).scalar_one()
    old = next(p["slug"] for p in dataset.parts if p["slug"] != dataset.slug)
    return old, dataset.slug


def test_every_published_slug_maps_to_a_record(session: Session) -> None:
    records = set(session.execute(select(Dataset.slug)).scalars())
    published = set(legacy_slugs().values())
    mapped = {slug: canonical_slug(session, slug) for slug in published}
    assert set(mapped.values()) <= records
    moved = {old for old, new in mapped.items() if old != new}
    assert moved == set(session.execute(select(DatasetRedirect.old_slug)).scalars())
    # no record appeared from nowhere: each one kept its slug or holds slugs merged into it
    assert records == (published - moved) | {mapped[m] for m in moved}
    assert canonical_slug(session, "no-such-dataset") is None
    # the same in bulk
    assert canonical_slugs(session, [*sorted(published), "no-such-dataset"]) == mapped


def test_the_api_redirects_an_old_slug_to_the_merged_record(client: Any, session: Session) -> None:
    old, new = _merged_part(session, "ImageCLEF 2016")
    response = client.get(f"/api/v1/datasets/{old}", follow_redirects=False)
    assert response.status_code == 308
    assert response.headers["location"] == f"/api/v1/datasets/{new}"
    body = client.get(f"/api/v1/datasets/{old}").json()
    assert body["slug"] == new
    assert old in [p["slug"] for p in body["parts"]]
    assert body["contradictions"] and body["merge_reasons"]
    assert client.get("/api/v1/datasets/no-such-dataset").status_code == 404


def test_the_page_redirects_and_shows_parts_contradictions_and_notes(client: Any, session: Session) -> None:
    old, new = _merged_part(session, "CMB-MEL")
    response = client.get(f"/datasets/{old}", follow_redirects=False)
    assert response.status_code == 301
    assert response.headers["location"] == f"/datasets/{new}"
    page = client.get(response.headers["location"]).text
    assert "survey records merged into this one" in page
    assert "Where the parts disagree" in page
    assert (
        "How ambiguous values were read" in page and "stated by the dataset&#39;s other survey rows" in page
    )
    assert f"<code>{old}</code>" in page


def test_the_redirects_are_idempotent_and_rewritten_with_the_file(session: Session) -> None:
    before = {tuple(r) for r in session.execute(select(DatasetRedirect.old_slug, DatasetRedirect.slug))}
    summary = import_catalog(session)
    assert (summary.created, summary.updated, summary.removed) == (0, 0, 0)
    assert {
        tuple(r) for r in session.execute(select(DatasetRedirect.old_slug, DatasetRedirect.slug))
    } == before
    assert summary.redirects == len(before)


def test_a_source_set_by_hand_on_a_merged_record_moves_to_the_record_it_was_merged_into(
    session: Session,
) -> None:
    # a database from before merging: one of the ImageCLEF 2016 variants, with an operator's descriptor
    old, new = _merged_part(session, "ImageCLEF 2016")
    descriptor = {"kind": "http", "url": "https://example.org/imageclef2016.zip"}
    provenance = {"resolver": "operator", "matched": None, "resolved_at": "2026-01-01T00:00:00+00:00"}
    session.add(
        Dataset(
            slug=old, name="ImageCLEF 2016", host="imageclef", access="open", size_bucket="10k-100k",
            source=descriptor, source_provenance=provenance, fetch_method="automatic", organisation="CLEF",
        )
    )  # fmt: skip
    session.flush()
    summary = import_catalog(session)
    assert summary.removed == 1
    assert session.execute(select(Dataset.id).where(Dataset.slug == old)).first() is None
    merged = session.execute(select(Dataset).where(Dataset.slug == new)).scalar_one()
    session.refresh(merged)
    assert merged.source == descriptor and merged.source_provenance["resolver"] == "operator"
    assert merged.organisation == "CLEF"
    assert canonical_slug(session, old) == new
