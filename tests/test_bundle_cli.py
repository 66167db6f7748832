"""`imagingx bundle build|status|get|cancel` against a live portal and a real worker."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bundle_fixtures import ServedSources, served_sources, sources_attached
from typer.testing import CliRunner

from app.cli import main

# `catalog set-source` works on the database the environment names, as every command here does
pytestmark = pytest.mark.usefixtures("configured_services")

runner = CliRunner()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedSources]:
    with (
        served_sources(tmp_path_factory.mktemp("cli-sources"), salt=secrets.token_hex(4)) as sources,
        sources_attached(sources.descriptors),
    ):
        yield sources


def _job_id(output: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith("bundle ") and "requested" in line)
    return line.split()[1]


def test_build_watches_the_job_and_downloads_a_verified_archive(
    served: ServedSources, live_server: str, celery_worker_process: Any, tmp_path: Path
) -> None:
    result = runner.invoke(
        main,
        [
            "bundle",
            "build",
            "ct-org",
            "ham10000",
            "lits",
            "--name",
            "CLI check",
            "--url",
            live_server,
            "--interval",
            "0.2",
            "--download",
            str(tmp_path / "first"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "ct-org: fetched" in result.output and "lits: manual" in result.output
    assert "done:" in result.output and "sha256 verified" in result.output
    job_id = _job_id(result.output)
    status = httpx.get(f"{live_server}/api/v1/bundles/{job_id}").json()
    (archive,) = (tmp_path / "first").iterdir()
    assert archive.name == "CLI-check.tar"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == status["result"]["archive_sha256"]

    # `get` resumes an interrupted download from the partial file and still verifies the whole
    second = tmp_path / "second"
    second.mkdir()
    (second / f"{job_id}.tar.part").write_bytes(archive.read_bytes()[:1000])
    got = runner.invoke(main, ["bundle", "get", job_id, "-o", str(second), "--url", live_server])
    assert got.exit_code == 0, got.output
    assert (second / "CLI-check.tar").read_bytes() == archive.read_bytes()

    shown = runner.invoke(main, ["bundle", "status", job_id, "--url", live_server])
    assert shown.exit_code == 0 and "ham10000" in shown.output


def test_errors_are_one_clear_line(live_server: str) -> None:
    unknown = runner.invoke(main, ["bundle", "build", "no-such-dataset", "--url", live_server])
    assert unknown.exit_code == 1 and "no-such-dataset" in unknown.output
    missing = runner.invoke(main, ["bundle", "get", "not-a-job", "--url", live_server])
    assert missing.exit_code == 1 and "404" in missing.output
    neither = runner.invoke(main, ["bundle", "build", "--url", live_server])
    assert neither.exit_code == 2
    unreachable = runner.invoke(main, ["bundle", "status", "x", "--url", "http://127.0.0.1:9"])
    assert unreachable.exit_code == 1 and "cannot reach" in unreachable.output


def test_catalog_set_source_validates_and_clears(tmp_path: Path) -> None:
    from app.catalog.service import get_dataset
    from app.core.db import new_session

    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "http", "files": [{"url": "ftp://x/y.zip"}]}')
    refused = runner.invoke(main, ["catalog", "set-source", "lits", str(bad)])
    assert refused.exit_code == 1 and "files.0" in refused.output
    good = tmp_path / "good.json"
    good.write_text('{"kind": "zenodo", "record": 6802613}')
    assert runner.invoke(main, ["catalog", "set-source", "lits", str(good)]).exit_code == 0
    with new_session() as session:
        assert get_dataset(session, "lits").source["record"] == "6802613"
    cleared = runner.invoke(main, ["catalog", "set-source", "lits", "--clear"])
    assert cleared.exit_code == 0 and "removed" in cleared.output
    with new_session() as session:
        assert get_dataset(session, "lits").source is None
