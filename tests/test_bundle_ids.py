"""nnU-Net dataset ids: a request may choose its bundle's id; by default each bundle gets one that none of its
owner's other bundles uses, and a bundle with several modalities takes further ids that stay clear of them too
(app/bundles/nnunet_ids.py). Real PostgreSQL: the ids are read from the owner's recorded jobs."""

from __future__ import annotations

from typing import Any

import pytest

OWNER = "owner-key-for-id-tests-0001"
OTHER = "another-owner-key-0000000002"


def _submit(client: Any, owner: str, **options: Any) -> dict[str, Any]:
    body = {"datasets": ["lits"], "options": options}
    response = client.post("/api/v1/bundles", json=body, headers={"X-Owner-Key": owner})
    assert response.status_code == 202, response.text
    return response.json()


def _first_id(job: dict[str, Any]) -> int:
    return int(job["request"]["options"]["nnunet_dataset_id"])


def test_two_bundles_of_one_owner_get_distinct_ids_and_a_chosen_id_is_honoured(client: Any) -> None:
    first = _first_id(_submit(client, OWNER))
    second = _first_id(_submit(client, OWNER))
    assert first >= 500 and second != first
    chosen = _submit(client, OWNER, nnunet_dataset_id=first + 1 if first + 1 != second else first + 2)
    assert _first_id(chosen) in (first + 1, first + 2)
    # the next default avoids every id this owner's bundles use, the chosen one included
    taken = {first, second, _first_id(chosen)}
    assert _first_id(_submit(client, OWNER)) not in taken
    # another owner's bundles do not count: its first bundle starts again from the lowest free id
    assert _first_id(_submit(client, OTHER)) == 500


@pytest.mark.parametrize("value", [0, 1000, "five"])
def test_an_id_outside_nnunets_range_is_refused(client: Any, value: Any) -> None:
    response = client.post(
        "/api/v1/bundles", json={"datasets": ["lits"], "options": {"nnunet_dataset_id": value}}
    )
    assert response.status_code == 422
    assert any("nnunet_dataset_id" in error["loc"] for error in response.json()["errors"])


def test_further_modalities_take_ids_no_other_bundle_of_the_owner_uses(session: Any) -> None:
    from app.bundles import nnunet_ids
    from app.bundles.models import BundleJob

    def job(job_id: str, first: int | None, ids: list[int] | None = None) -> BundleJob:
        row = BundleJob(
            id=job_id,
            state="packaging",
            name=job_id,
            request={"datasets": ["lits"], "options": {"nnunet_dataset_id": first}},
            owner=OWNER,
            warnings=[],
            nnunet_ids=ids,
        )
        session.add(row)
        return row

    job("idtest-a", 500, [500, 502])  # packaged with two modalities
    job("idtest-b", 501)  # not packaged yet: its requested id is taken
    three = job("idtest-c", 503)
    session.flush()
    assert nnunet_ids.packaging_ids(session, three, 3) == [503, 504, 505]
    assert three.nnunet_ids == [503, 504, 505]
    # a rerun gets the recorded ids back
    assert nnunet_ids.packaging_ids(session, three, 3) == [503, 504, 505]
    late = job("idtest-d", 499)
    session.flush()
    assert nnunet_ids.packaging_ids(session, late, 3) == [499, 506, 507]  # 500..505 are taken
    assert nnunet_ids.default_first_id(session, OWNER) == 508
