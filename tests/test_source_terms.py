"""Licences and DOIs a host states for a record (Zenodo, legacy and InvenioRDM answers) travel with the files
the adapter resolves, so the bundle can carry them with their source; nothing is made up where none is stated."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_http import LocalHTTPServer

from app.common.descriptors import ZenodoSource
from app.core.config import Settings
from workers.pipeline.fetch import host_licences
from workers.sources import zenodo
from workers.sources.net import new_client

SCAN = b"not really a scan, but bytes with a checksum\n"


@pytest.fixture
def api() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as running:
        yield running


def _record(api: LocalHTTPServer, record: str, extra: dict[str, Any]) -> None:
    api.add_file(f"/files/{record}/scan.bin", SCAN)
    api.add_json(
        f"/zenodo/api/records/{record}",
        {
            "files": [
                {
                    "key": "scan.bin",
                    "size": len(SCAN),
                    "checksum": f"md5:{hashlib.md5(SCAN).hexdigest()}",
                    "links": {"self": api.url(f"/files/{record}/scan.bin")},
                }
            ],
            **extra,
        },
    )


@pytest.mark.parametrize(
    ("extra", "licence", "doi"),
    [
        # the legacy API
        (
            {"doi": "10.5281/zenodo.4242", "metadata": {"license": {"id": "cc-by-4.0"}}},
            "cc-by-4.0",
            "10.5281/zenodo.4242",
        ),
        # InvenioRDM
        (
            {
                "pids": {"doi": {"identifier": "10.5281/zenodo.4243", "provider": "datacite"}},
                "metadata": {"rights": [{"id": "cc-by-nc-4.0", "title": {"en": "CC BY-NC 4.0"}}]},
            },
            "cc-by-nc-4.0",
            "10.5281/zenodo.4243",
        ),
        ({"metadata": {"rights": [{"title": {"en": "Custom data licence"}}]}}, "Custom data licence", ""),
        ({"metadata": {}}, "", ""),  # nothing stated: nothing carried
    ],
)
def test_a_zenodo_records_licence_and_doi_travel_with_its_files(
    api: LocalHTTPServer, tmp_path: Path, extra: dict[str, Any], licence: str, doi: str
) -> None:
    settings = Settings(
        home=tmp_path / "home", allow_private_sources=True, zenodo_api_url=api.url("/zenodo/api")
    )
    _record(api, "4242", extra)
    with new_client() as client:
        (remote,) = zenodo.resolve(ZenodoSource(kind="zenodo", record="4242"), settings, client)
    assert (remote.stated_licence, remote.stated_doi) == (licence, doi)
    assert remote.stated_by == "Zenodo record 4242"
    expected = [{"licence": licence, "from": "Zenodo record 4242"}] if licence else []
    assert host_licences([remote, remote]) == expected  # one statement per record, not per file
