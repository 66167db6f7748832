"""`imagingx bundle build` requests every bundle with one owner key kept in IMAGINGX_HOME: the portal then
gives the user's bundles distinct nnU-Net ids (and lets `cancel` through), and `--nnunet-id` is honoured."""

from __future__ import annotations

import stat
import time

import httpx
import pytest
from typer.testing import CliRunner

from app.cli import main

pytestmark = pytest.mark.usefixtures("configured_services")
runner = CliRunner()


def _requested(live_server: str, *extra: str) -> dict[str, object]:
    result = runner.invoke(main, ["bundle", "build", "lits", "--no-wait", "--url", live_server, *extra])
    assert result.exit_code == 0, result.output
    line = next(
        line for line in result.output.splitlines() if line.startswith("bundle ") and "requested" in line
    )
    answer: dict[str, object] = httpx.get(f"{live_server}/api/v1/bundles/{line.split()[1]}").json()
    return answer


def test_the_clis_bundles_share_one_owner_and_get_distinct_nnunet_ids(live_server: str) -> None:
    from app.bundles.cli import OWNER_KEY_FILE
    from app.core.config import get_settings

    first = _requested(live_server)
    second = _requested(live_server)
    ids = [job["request"]["options"]["nnunet_dataset_id"] for job in (first, second)]  # type: ignore[index]
    assert ids[0] != ids[1]
    key_file = get_settings().home / OWNER_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    listed = httpx.get(f"{live_server}/api/v1/bundles", headers={"X-Owner-Key": key}).json()
    assert {first["id"], second["id"]} <= {job["id"] for job in listed["results"]}
    chosen = _requested(live_server, "--nnunet-id", "742")
    assert chosen["request"]["options"]["nnunet_dataset_id"] == 742  # type: ignore[index]


def test_watching_a_job_stops_at_the_timeout_and_says_how_to_follow_it(live_server: str) -> None:
    from bundle_fixtures import queue_for_this_process

    with queue_for_this_process("imagingx-test-nobody-listens"):  # the job stays queued
        job_id = str(_requested(live_server)["id"])
        started = time.monotonic()
        result = runner.invoke(
            main, ["bundle", "get", job_id, "--wait", "--timeout", "1", "--url", live_server, "-o", "."]
        )
    assert result.exit_code == 3, result.output
    assert time.monotonic() - started < 15
    assert f"bundle {job_id} is still queued" in result.output
    assert f"imagingx bundle status {job_id}" in result.output
    assert httpx.get(f"{live_server}/api/v1/bundles/{job_id}").json()["state"] == "queued", "the job goes on"
