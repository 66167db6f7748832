"""The harmonise unit against the database: a label on another grid than its image is skipped at stage
`harmonise` with the reason by default, or resampled and recorded when the request allows it; a kept item's
account (alterations, modality and where it came from, unknown labels, subject rule) is stored with it."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import imaging_fixtures as fx
import nibabel as nib
import numpy as np
import pytest

from app.common.labels import unify_labels
from workers.imaging.layout import detect_layout
from workers.pipeline.common import case_to_json


def _job_with_short_label(home: Path, options: dict[str, Any]) -> tuple[str, list[str]]:
    """A job in `harmonising` with one MSD source whose first case's label is one slice short of its image."""
    from app.bundles import service
    from app.bundles.models import BundleItem, BundleJob, BundleSource
    from app.core.config import get_settings
    from app.core.db import new_session

    job_id = secrets.token_urlsafe(12)
    settings = get_settings().model_copy(update={"home": home})
    root = service.work_dir(settings, job_id) / "sources" / "msd"
    fx.build_msd_source(root, names={"1": "Liver", "2": "Wobble"}, cases=2)
    label = root / "Task98_Abdomen" / "labelsTr" / "abdomen_000.nii.gz"
    loaded = nib.load(label)
    nib.save(nib.Nifti1Image(np.asarray(loaded.dataobj)[:, :, :-1], loaded.affine), label)
    cases = [c for c in detect_layout(root).cases if c.split is None]
    unification = unify_labels({"msd": cases[0].label_table})
    labels = {
        "table": unification.table,
        "local_to_concept": {
            s: {str(k): v for k, v in m.items()} for s, m in unification.local_to_concept.items()
        },
        "local_to_global": {
            s: {str(k): v for k, v in m.items()} for s, m in unification.local_to_global.items()
        },
    }
    with new_session() as session:
        session.add(
            BundleJob(
                id=job_id,
                state="harmonising",
                name="grids",
                request={"datasets": ["msd"], "options": options},
                warnings=[],
                labels=labels,
            )
        )
        session.flush()
        session.add(BundleSource(job_id=job_id, slug="msd", position=0, name="msd", state="fetched"))
        for case in cases:
            session.add(
                BundleItem(
                    job_id=job_id,
                    item_id=f"msd_{case.case_id}",
                    slug="msd",
                    state="pending",
                    case=case_to_json(case, service.work_dir(settings, job_id)),
                )
            )
        session.commit()
    return job_id, [f"msd_{case.case_id}" for case in cases]


def _harmonise_all(home: Path, job_id: str, item_ids: list[str]) -> dict[str, Any]:
    from app.bundles.models import BundleItem
    from app.core.config import get_settings
    from app.core.db import new_session
    from workers.pipeline.harmonise import harmonise_item

    settings = get_settings().model_copy(update={"home": home})
    for item_id in item_ids:
        harmonise_item(job_id, item_id, settings)
    with new_session() as session:
        return {
            item_id: (row.state, row.stage, row.reason, row.harmonised)
            for item_id in item_ids
            if (row := session.get(BundleItem, (job_id, item_id))) is not None
        }


@pytest.mark.usefixtures("undone_transaction")
def test_a_label_on_another_grid_is_skipped_at_stage_harmonise_by_default(tmp_path: Path) -> None:
    job_id, item_ids = _job_with_short_label(tmp_path, {})
    rows = _harmonise_all(tmp_path, job_id, item_ids)
    state, stage, reason, harmonised = rows["msd_abdomen_000"]
    assert (state, stage, harmonised) == ("skipped", "harmonise", None)
    assert "label grid differs from its image's" in reason and "size" in reason
    assert "Task98_Abdomen/labelsTr/abdomen_000.nii.gz" in reason and str(tmp_path) not in reason
    state, stage, _reason, kept = rows["msd_abdomen_001"]
    assert (state, stage) == ("done", None)
    assert (kept["modality"], kept["modality_from"], kept["modality_disagreement"]) == (
        "MR",
        "dataset.json",
        None,  # the dataset has no catalog entry: nothing to disagree with
    )
    assert kept["unknown_labels"] == ["Wobble"] and kept["alterations"] == []
    assert kept["subject_from"].startswith("none: one subject per case")


@pytest.mark.usefixtures("undone_transaction")
def test_a_label_on_another_grid_is_resampled_when_the_request_allows_it(tmp_path: Path) -> None:
    job_id, item_ids = _job_with_short_label(tmp_path, {"resample_mismatched_labels": True})
    rows = _harmonise_all(tmp_path, job_id, item_ids)
    state, stage, _reason, harmonised = rows["msd_abdomen_000"]
    assert (state, stage) == ("done", None)
    assert [a["kind"] for a in harmonised["alterations"]] == ["resampled"]
    assert "size 33x41x24, the image's 33x41x25" in harmonised["alterations"][0]["detail"]
