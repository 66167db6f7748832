"""What hosts state about a record's terms travels with its files: a figshare article's `license` and DOI, a
Dataverse version's `license` or `termsOfUse` and the dataset's DOI, and OpenNeuro's BIDS description (fetched
even when `include` leaves it out, since it states the licence). Against real local HTTP servers answering as
those hosts do (fields trimmed from real responses)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_http import LocalHTTPServer, RecordedRequest
from test_source_hosts import SCAN, dataverse_file, git_blob_id, make_settings, md5, sha256

from app.core.config import Settings
from workers.pipeline.fetch import host_licences
from workers.sources import SourceError, fetch_source, resolve_source
from workers.sources.dataverse import stated_licence


@pytest.fixture
def api() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as running:
        yield running


@pytest.fixture
def settings(tmp_path: Path, api: LocalHTTPServer) -> Settings:
    return make_settings(tmp_path, api)


def _figshare(api: LocalHTTPServer, article: dict[str, Any] | None) -> None:
    api.add_file("/figshare/ndownloader/files/901", SCAN)
    entry = {
        "id": 901,
        "name": "scan.nii.gz",
        "size": len(SCAN),
        "is_link_only": False,
        "download_url": api.url("/figshare/ndownloader/files/901"),
        "supplied_md5": "",
        "computed_md5": md5(SCAN),
    }
    api.add_json("/figshare/v2/articles/9001/files", [entry])
    if article is not None:
        api.add_json("/figshare/v2/articles/9001", article)


def test_a_figshare_article_states_its_licence_and_doi(api: LocalHTTPServer, settings: Settings) -> None:
    _figshare(
        api,
        {
            "id": 9001,
            "title": "Brain MRI scans",
            "doi": "10.6084/m9.figshare.9001.v1",
            "license": {
                "value": 1,
                "name": "CC BY 4.0",
                "url": "https://creativecommons.org/licenses/by/4.0/",
            },
        },
    )
    remotes = resolve_source({"kind": "figshare", "article": 9001}, settings)
    assert [(r.name, r.stated_licence, r.stated_doi, r.stated_by) for r in remotes] == [
        ("scan.nii.gz", "CC BY 4.0", "10.6084/m9.figshare.9001.v1", "figshare article 9001")
    ]
    assert host_licences(remotes) == [{"licence": "CC BY 4.0", "from": "figshare article 9001"}]


def test_a_figshare_article_whose_metadata_cannot_be_read_is_fetched_without_terms(
    tmp_path: Path, api: LocalHTTPServer, settings: Settings
) -> None:
    _figshare(api, None)  # the article endpoint answers 404
    remotes = resolve_source({"kind": "figshare", "article": 9001}, settings)
    assert [(r.name, r.stated_licence, r.stated_doi) for r in remotes] == [("scan.nii.gz", "", "")]
    assert host_licences(remotes) == []
    placed = fetch_source({"kind": "figshare", "article": "9001"}, tmp_path / "job", settings)
    assert [p.read_bytes() for p in placed] == [SCAN]


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (
            {"license": {"name": "CC0 1.0", "uri": "http://creativecommons.org/publicdomain/zero/1.0"}},
            "CC0 1.0",
        ),
        ({"license": "CC0"}, "CC0"),  # Dataverse before 5.10
        (
            {"license": "NONE", "termsOfUse": "<p>Research use only.</p>\n<p>Cite  the &amp; paper.</p>"},
            "Research use only. Cite the & paper.",
        ),
        ({"termsOfUse": "x" * 500}, "x" * 200),
        ({}, ""),
    ],
)
def test_a_dataverse_version_states_its_licence_or_terms(version: dict[str, Any], expected: str) -> None:
    assert stated_licence(version) == expected


def test_dataverse_files_carry_the_versions_licence_and_the_dataset_doi(
    api: LocalHTTPServer, settings: Settings
) -> None:
    api.add_file("/dv/api/access/datafile/11", SCAN)
    api.add_json(
        "/dv/api/datasets/:persistentId/",
        {
            "status": "OK",
            "data": {
                "id": 5,
                "latestVersion": {
                    "versionState": "RELEASED",
                    "license": {"name": "CC BY 4.0", "uri": "http://creativecommons.org/licenses/by/4.0"},
                    "files": [dataverse_file(11, "ct_001.nii.gz", SCAN)],
                },
            },
        },
    )
    descriptor = {"kind": "dataverse", "server": api.url("/dv"), "doi": "10.7910/DVN/6ACUZJ"}
    remotes = resolve_source(descriptor, settings)
    what = f"Dataverse dataset doi:10.7910/DVN/6ACUZJ at {api.url('/dv')}"
    assert [(r.stated_licence, r.stated_doi, r.stated_by) for r in remotes] == [
        ("CC BY 4.0", "10.7910/DVN/6ACUZJ", what)
    ]


def test_openneuro_fetches_the_bids_description_even_when_include_leaves_it_out(
    tmp_path: Path, api: LocalHTTPServer, settings: Settings
) -> None:
    description = json.dumps({"Name": "Demo", "BIDSVersion": "1.8.0", "License": "CC0"}).encode()
    blobs = {"dataset_description.json": description, "README": b"readme\n"}
    annexed = b"\x1f\x8b" + SCAN
    files = []
    for name, body in blobs.items():
        api.add_file(f"/openneuro/crn/datasets/ds000009/objects/{git_blob_id(body)}", body)
        url = api.url(f"/openneuro/crn/datasets/ds000009/objects/{git_blob_id(body)}")
        files.append({"id": git_blob_id(body), "filename": name, "size": len(body), "directory": False,
                      "annexed": False, "urls": [url]})  # fmt: skip
    key = f"SHA256E-s{len(annexed)}--{sha256(annexed)}.nii.gz"
    api.add_file("/s3/sub-01_T1w.nii.gz", annexed)
    files.append({"id": key, "filename": "sub-01/anat/sub-01_T1w.nii.gz", "size": len(annexed),
                  "directory": False, "annexed": True, "urls": [api.url("/s3/sub-01_T1w.nii.gz")]})  # fmt: skip

    def graphql(request: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        data = {"snapshot": {"id": "ds000009:1.0.0", "tag": "1.0.0", "files": files}}
        return 200, {}, json.dumps({"data": data}).encode()

    api.add_handler("/openneuro/crn/graphql", graphql)
    descriptor = {"kind": "openneuro", "dataset": "ds000009", "version": "1.0.0", "include": ["sub-*/anat/*"]}
    assert sorted(r.name for r in resolve_source(descriptor, settings)) == [
        "dataset_description.json",
        "sub-01/anat/sub-01_T1w.nii.gz",
    ]
    from workers.packaging.source_terms import stated_licences

    fetch_source(descriptor, tmp_path / "job", settings)
    assert stated_licences(tmp_path / "job") == [{"licence": "CC0", "from": "dataset_description.json"}]
    # an include that matches nothing still says so (the description alone is no source)
    with pytest.raises(SourceError, match="no files"):
        resolve_source({**descriptor, "include": ["sub-*/func/*"]}, settings)
