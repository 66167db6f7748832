"""Facet counts are disjunctive: each value's count equals the results of selecting it (property test),
and the bitmap engine agrees with a brute-force evaluation of the same filter over the database rows."""

from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.catalog.models import Dataset
from app.search.index import CatalogIndex
from app.search.schemas import FACETS

# Values drawn from what the seed catalog actually holds, plus a few that match nothing.
CHOICES: dict[str, list[str]] = {
    "modality": ["CT", "MR", "PT", "US", "XR", "FUNDUS", "HISTOPATHOLOGY", "INFRARED"],
    "anatomy": ["thorax", "lung", "abdomen", "liver", "brain", "head", "skin", "breast", "retina"],
    "task": ["segmentation", "classification", "detection", "registration"],
    "dim": ["2D", "3D", "video"],
    "access": ["open", "registration", "application", "unknown"],
    "labeled": ["true", "false"],
    "host": ["tcia", "kaggle", "grand_challenge", "github", "other"],
    "year": ["2018", "2019", "2020", "2021", "unknown"],
    "size": ["lt100", "100-1k", "1k-10k", "100k+", "unknown"],
    "licence": ["unknown", "CC-BY-4.0", "CC-BY-3.0"],
    "fetch": ["automatic", "credentials", "manual"],
    "quality": ["none", "url_shared", "year_missing"],
}

filters = st.dictionaries(
    st.sampled_from(sorted(CHOICES)),
    st.integers(min_value=0, max_value=2**16),
    max_size=4,
).map(
    lambda picks: {
        f: sorted({CHOICES[f][i % len(CHOICES[f])], CHOICES[f][(i // 7) % len(CHOICES[f])]})
        for f, i in picks.items()
    }
)


def params_of(terms: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(facet, value) for facet, values in terms.items() for value in values]


def count(client: TestClient, terms: dict[str, list[str]]) -> int:
    response = client.get("/api/v1/datasets", params=[*params_of(terms), ("page_size", "1")])
    assert response.status_code == 200, response.text
    return response.json()["count"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(terms=filters, facet=st.sampled_from(sorted(FACETS)))
def test_each_facet_count_equals_the_results_of_selecting_that_value(
    client: TestClient, terms: dict[str, list[str]], facet: str
) -> None:
    response = client.get(
        "/api/v1/datasets", params=[*params_of(terms), ("page_size", "1"), ("_facet_size", "max")]
    )
    body: dict[str, Any] = response.json()
    payload = next(f for f in body["facets"] if f["name"] == facet)
    shown = {v["value"]: v for v in payload["results"]}
    assert not payload["truncated"]
    for value in CHOICES[facet]:
        expected = count(client, {**terms, facet: [value]})
        # a value that has results must be shown with exactly that count; one with none may be hidden
        assert shown.get(value, {"count": 0})["count"] == expected, (facet, value, terms)
        if value in shown and not terms.get(facet):  # toggling on in an empty facet shows that many results
            assert client.get(shown[value]["toggle_url"] + "&page_size=1").json()["count"] == expected


def brute_force_count(rows: list[Dataset], terms: dict[str, list[str]]) -> int:
    def matches(row: Dataset) -> bool:
        return all(
            set(CatalogIndex.facet_values_of(f, row)) & set(values) for f, values in terms.items() if values
        )

    return sum(1 for row in rows if matches(row))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(terms=filters)
def test_result_counts_agree_with_a_brute_force_scan(
    client: TestClient, session: Session, terms: dict[str, list[str]]
) -> None:
    rows = session.execute(select(Dataset)).scalars().all()
    assert count(client, terms) == brute_force_count(list(rows), terms)
