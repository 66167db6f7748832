"""Database tests run inside a transaction that is always undone, even when the code under test commits
(app.core.db.undone_transaction, which tests/conftest.py's fixture of that name runs each test inside), and what the process derived from the
catalog meanwhile is forgotten with it: after a rollback the catalog's version numbers repeat."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.catalog.models import CatalogState, Dataset
from app.catalog.service import catalog_version
from app.core.db import get_engine, new_session, sessions_inside
from app.core.db import undone_transaction as undone  # what the fixture runs each test inside
from app.search.filters import SearchFilter
from app.search.service import search_json

pytestmark = pytest.mark.usefixtures("configured_services")

WORD = "zqxjvunlikelyword"


def _rename_and_commit(slug: str) -> None:
    """What a catalog change does: a dataset's name changes, the catalog version goes up, and it commits."""
    with new_session() as session:
        dataset = session.execute(select(Dataset).where(Dataset.slug == slug)).scalar_one()
        dataset.name = f"{WORD} {dataset.name}"
        state = session.get(CatalogState, 1)
        assert state is not None
        state.version += 1
        session.commit()


def _text_hits(word: str) -> list[str]:
    with new_session() as session:
        body = search_json(session, SearchFilter(q=word), page_size=5)
    return [row["slug"] for row in json.loads(body)["results"]]


def _two_slugs() -> tuple[str, str]:
    with new_session() as session:
        first, second = session.execute(select(Dataset.slug).order_by(Dataset.id).limit(2)).scalars()
        return first, second


def test_commits_of_the_code_under_test_are_undone() -> None:
    first, _ = _two_slugs()
    with new_session() as session:
        version_before = catalog_version(session)
    with undone():
        _rename_and_commit(first)
        with new_session() as session:  # a later session of the same test sees the commit
            name = session.execute(select(Dataset.name).where(Dataset.slug == first)).scalar_one()
            assert name.startswith(WORD)
            assert catalog_version(session) == version_before + 1
    with new_session() as session:
        name = session.execute(select(Dataset.name).where(Dataset.slug == first)).scalar_one()
        assert not name.startswith(WORD)
        assert session.execute(text("SELECT max(version) FROM catalog_state")).scalar_one() == version_before
        assert catalog_version(session) == version_before


def test_answers_kept_for_a_rolled_back_version_are_not_served_again() -> None:
    # Both blocks produce the same version number with different catalogs: an answer kept from the first
    # would be found again under the second's key if the rollback did not forget it.
    first, second = _two_slugs()
    with undone():
        _rename_and_commit(first)
        assert _text_hits(WORD) == [first]
    with undone():
        _rename_and_commit(second)
        assert _text_hits(WORD) == [second]
    assert _text_hits(WORD) == []


def test_sessions_cannot_be_bound_twice() -> None:
    with (
        get_engine().connect() as connection,
        sessions_inside(connection),
        pytest.raises(RuntimeError, match="already bound"),
        sessions_inside(connection),
    ):
        pass


def test_the_session_fixture_and_the_app_share_the_tests_transaction(client: Any, session: Session) -> None:
    # what the app commits during a request, the test's own session sees; neither outlives the test. (Sessions
    # that share the connection must end in the reverse order they began: each one's work is a savepoint.)
    slug = session.execute(select(Dataset.slug).limit(1)).scalar_one()
    with new_session() as other:
        assert other.connection() is session.connection()
    created = client.post("/api/v1/selections", json={"slugs": [slug]})
    assert created.status_code in (200, 201), created.text
    selection_id = created.json()["id"]
    assert (
        session.execute(text("SELECT count(*) FROM selection WHERE id = :id"), {"id": selection_id}).scalar()
        == 1
    )
    with get_engine().connect() as outside:
        assert (
            outside.execute(
                text("SELECT count(*) FROM selection WHERE id = :id"), {"id": selection_id}
            ).scalar()
            == 0
        )
