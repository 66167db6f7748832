"""The OpenNeuro, DOI, Dataverse, Kaggle, Synapse and PhysioNet adapters and the downloader's files without a
published checksum, against real local HTTP servers speaking each host's protocol.

`api` (127.0.0.1) stands in for the hosts' APIs, `storage` (named `localhost`, another host) for the storage a
download redirects to (S3 or Google Cloud Storage presigned URLs), `resolver` for doi.org.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_http import LocalHTTPServer, RecordedRequest

from app.common.descriptors import DataverseSource, FigshareSource, ZenodoSource
from app.core.config import Settings
from workers.sources import (
    Downloader,
    RemoteFile,
    SourceError,
    fetch_source,
    parse_source,
    resolve_source,
)
from workers.sources.base import Credential, CredentialsMissingError
from workers.sources.doi import landing_source
from workers.sources.net import new_client, open_response

SCAN = random.Random(11).randbytes(150_000)
ARCHIVE = random.Random(12).randbytes(200_000)
KAGGLE_USER, KAGGLE_KEY = "radiologist", "0123456789abcdef0123456789abcdef"
SYNAPSE_TOKEN = "eyJ0eXAiOiJKV1QiLCJraWQiOiJ0ZXN0In0.synapse-token"
PHYSIONET_USER, PHYSIONET_PASSWORD = "reader", "correct horse battery staple"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def git_blob_id(body: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()


@pytest.fixture
def api() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as running:
        yield running


@pytest.fixture
def storage() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer(host_name="localhost") as running:
        yield running


@pytest.fixture
def resolver() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as running:
        yield running


def make_settings(tmp_path: Path, api: LocalHTTPServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": tmp_path / "home",
        "allow_private_sources": True,
        "zenodo_api_url": api.url("/zenodo/api"),
        "figshare_api_url": api.url("/figshare/v2"),
        "openneuro_url": api.url("/openneuro"),
        "kaggle_api_url": api.url("/kaggle/api/v1"),
        "synapse_api_url": api.url("/synapse"),
        "physionet_url": api.url("/physionet"),
        "kaggle_username": None,
        "kaggle_key": None,
        "synapse_token": None,
        "physionet_username": None,
        "physionet_password": None,
        "download_concurrency": 2,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path, api: LocalHTTPServer, resolver: LocalHTTPServer) -> Settings:
    return make_settings(tmp_path, api, doi_resolver_url=resolver.url(""))


def authorization_headers(server: LocalHTTPServer) -> list[str]:
    return [r.headers["Authorization"] for r in server.requests if "Authorization" in r.headers]


# --- OpenNeuro -------------------------------------------------------------------------------------------

README = b"OpenNeuro test dataset\n"
T1W = random.Random(13).randbytes(90_000)
BOLD = random.Random(14).randbytes(60_000)
T1W_KEY = f"SHA256E-s{len(T1W)}--{sha256(T1W)}.nii.gz"
BOLD_KEY = f"MD5E-s{len(BOLD)}--{md5(BOLD)}.nii.gz"


def openneuro_file(filename: str, file_id: str, body: bytes, url: str, annexed: bool) -> dict[str, Any]:
    return {
        "id": file_id,
        "filename": filename,
        "size": len(body),
        "directory": False,
        "annexed": annexed,
        "urls": [url],
    }


def serve_openneuro(
    api: LocalHTTPServer, storage: LocalHTTPServer, *, recursive: bool, t1w_served: bytes = T1W
) -> list[dict[str, Any]]:
    """A GraphQL endpoint for ds000001 (snapshot 1.0.0, also the latest). The annexed files come from
    `storage` (S3), the git file from OpenNeuro's objects endpoint. With `recursive=False` the server rejects
    `files(recursive: true)` as servers before that argument did, and lists one tree per query."""
    storage.add_file("/openneuro.org/ds000001/sub-01/anat/sub-01_T1w.nii.gz", t1w_served)
    storage.add_file("/openneuro.org/ds000001/sub-01/func/sub-01_bold.nii.gz", BOLD)
    readme_id = git_blob_id(README)
    api.add_file(f"/openneuro/crn/datasets/ds000001/objects/{readme_id}", README)
    readme = openneuro_file(
        "README", readme_id, README, api.url(f"/openneuro/crn/datasets/ds000001/objects/{readme_id}"), False
    )
    t1w = openneuro_file(
        "sub-01_T1w.nii.gz",
        T1W_KEY,
        T1W,
        storage.url("/openneuro.org/ds000001/sub-01/anat/sub-01_T1w.nii.gz") + "?versionId=abc",
        True,
    )
    bold = openneuro_file(
        "sub-01_bold.nii.gz",
        BOLD_KEY,
        BOLD,
        storage.url("/openneuro.org/ds000001/sub-01/func/sub-01_bold.nii.gz"),
        True,
    )
    directory = {"size": 0, "directory": True, "annexed": False, "urls": []}
    trees = {
        None: [readme, directory | {"id": "tree-sub01", "filename": "sub-01"}],
        "tree-sub01": [
            directory | {"id": "tree-anat", "filename": "anat"},
            directory | {"id": "tree-func", "filename": "func"},
        ],
        "tree-anat": [t1w],
        "tree-func": [bold],
    }
    flat = [
        readme,
        t1w | {"filename": "sub-01/anat/sub-01_T1w.nii.gz"},
        bold | {"filename": "sub-01/func/sub-01_bold.nii.gz"},
    ]
    queries: list[dict[str, Any]] = []

    def graphql(request: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        body = request.json()
        queries.append(body)
        query, variables = body["query"], body["variables"]
        if "latestSnapshot" in query:
            data: dict[str, Any] = {"dataset": {"latestSnapshot": {"tag": "1.0.0"}}}
        elif variables.get("tag") != "1.0.0":
            return 200, {}, json.dumps({"errors": [{"message": "snapshot not found"}], "data": None}).encode()
        elif "recursive: true" in query:
            if not recursive:
                error = {"message": 'Unknown argument "recursive" on field "Snapshot.files".'}
                return 400, {}, json.dumps({"errors": [error]}).encode()
            data = {"snapshot": {"id": "ds000001:1.0.0", "tag": "1.0.0", "files": flat}}
        else:
            data = {
                "snapshot": {"id": "ds000001:1.0.0", "tag": "1.0.0", "files": trees[variables.get("tree")]}
            }
        return 200, {}, json.dumps({"data": data}).encode()

    api.add_handler("/openneuro/crn/graphql", graphql)
    return queries


EXPECTED_OPENNEURO = [
    ("README", None, None, git_blob_id(README), len(README)),
    ("sub-01/anat/sub-01_T1w.nii.gz", sha256(T1W), None, None, len(T1W)),
    ("sub-01/func/sub-01_bold.nii.gz", None, md5(BOLD), None, len(BOLD)),
]


def test_openneuro_snapshot_files_are_listed_and_verified_by_their_annex_keys(
    tmp_path: Path, api: LocalHTTPServer, storage: LocalHTTPServer, settings: Settings
) -> None:
    queries = serve_openneuro(api, storage, recursive=True)
    remotes = resolve_source({"kind": "openneuro", "dataset": "ds000001", "version": "1.0.0"}, settings)
    assert [(r.name, r.sha256, r.md5, r.git_sha1, r.size) for r in remotes] == EXPECTED_OPENNEURO
    assert [r.verification for r in remotes] == ["git blob id", "sha256", "md5"]
    assert len(queries) == 1 and queries[0]["variables"] == {"dataset": "ds000001", "tag": "1.0.0"}
    placed = fetch_source({"kind": "openneuro", "dataset": "ds000001"}, tmp_path / "job", settings)
    assert {p.relative_to(tmp_path / "job").as_posix(): p.read_bytes() for p in placed} == {
        "README": README,
        "sub-01/anat/sub-01_T1w.nii.gz": T1W,
        "sub-01/func/sub-01_bold.nii.gz": BOLD,
    }
    assert "latestSnapshot" in queries[1]["query"]  # no version: the newest snapshot, then pinned
    assert queries[2]["variables"]["tag"] == "1.0.0"
    assert (settings.home / "cache" / "sha256" / sha256(T1W)).exists()


def test_openneuro_ids_that_carry_no_checksum_are_taken_by_size_only(
    api: LocalHTTPServer, storage: LocalHTTPServer, settings: Settings
) -> None:
    """A server from before April 2026 gave every file an opaque id (a hash of key and path): an annexed file
    whose id is no annex key shows it, and no 40-hex id is then taken for a git blob id."""
    serve_openneuro(api, storage, recursive=True)
    graphql = api.routes["/openneuro/crn/graphql"].handler
    assert graphql is not None

    def opaque(request: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        status, headers, body = graphql(request)
        answer = json.loads(body)
        for entry in answer["data"]["snapshot"]["files"]:
            entry["id"] = hashlib.sha1(entry["filename"].encode()).hexdigest()
        return status, headers, json.dumps(answer).encode()

    api.add_handler("/openneuro/crn/graphql", opaque)
    remotes = resolve_source({"kind": "openneuro", "dataset": "ds000001", "version": "1.0.0"}, settings)
    assert [(r.name, r.cache_key, r.no_checksum, r.verification) for r in remotes] == [
        ("README", None, True, "size only"),
        ("sub-01/anat/sub-01_T1w.nii.gz", None, True, "size only"),
        ("sub-01/func/sub-01_bold.nii.gz", None, True, "size only"),
    ]


def test_openneuro_without_recursive_listing_walks_the_trees(
    api: LocalHTTPServer, storage: LocalHTTPServer, settings: Settings
) -> None:
    queries = serve_openneuro(api, storage, recursive=False)
    remotes = resolve_source({"kind": "openneuro", "dataset": "ds000001", "version": "1.0.0"}, settings)
    assert [(r.name, r.sha256, r.md5, r.git_sha1, r.size) for r in remotes] == EXPECTED_OPENNEURO
    trees = sorted(str(q["variables"].get("tree")) for q in queries[1:])
    assert trees == ["None", "tree-anat", "tree-func", "tree-sub01"]
    only_anat = resolve_source(
        {"kind": "openneuro", "dataset": "ds000001", "version": "1.0.0", "include": ["sub-*/anat/*"]},
        settings,
    )
    assert [r.name for r in only_anat] == ["sub-01/anat/sub-01_T1w.nii.gz"]


def test_openneuro_checksum_mismatch_and_unknown_snapshot_fail_clearly(
    tmp_path: Path, api: LocalHTTPServer, storage: LocalHTTPServer, settings: Settings
) -> None:
    serve_openneuro(api, storage, recursive=True, t1w_served=T1W[:-1] + b"\x00")
    with pytest.raises(SourceError, match=rf"sub-01_T1w.nii.gz: sha256 mismatch: expected {sha256(T1W)}"):
        fetch_source(
            {"kind": "openneuro", "dataset": "ds000001", "version": "1.0.0", "include": ["*T1w*"]},
            tmp_path / "job",
            settings,
        )
    assert not (settings.home / "cache" / "sha256" / sha256(T1W)).exists()
    with pytest.raises(SourceError, match=r"OpenNeuro ds000001 snapshot 9.9.9: snapshot not found"):
        resolve_source({"kind": "openneuro", "dataset": "ds000001", "version": "9.9.9"}, settings)


# --- DOI -------------------------------------------------------------------------------------------------


def test_known_doi_prefixes_map_without_asking_the_resolver(
    resolver: LocalHTTPServer, settings: Settings
) -> None:
    with new_client() as client:
        zen = landing_source(
            parse_source({"kind": "doi", "doi": "doi:10.5281/zenodo.7840229"}), settings, client
        )
        fig = landing_source(
            parse_source({"kind": "doi", "doi": "https://doi.org/10.6084/m9.figshare.1234567.v3"}),
            settings,
            client,
        )
    assert zen == ZenodoSource(kind="zenodo", record="7840229")
    assert fig == FigshareSource(kind="figshare", article="1234567", version=3)
    assert resolver.requests == []


def test_doi_redirect_chains_lead_to_zenodo_figshare_and_dataverse(
    tmp_path: Path,
    api: LocalHTTPServer,
    storage: LocalHTTPServer,
    resolver: LocalHTTPServer,
    settings: Settings,
) -> None:
    # Zenodo: doi.org -> the record's DOI page -> the record
    resolver.add_redirect("/10.1234/zen.42", api.url("/doi/10.1234/zen.42"))
    api.add_redirect("/doi/10.1234/zen.42", "/records/4242", status=301)
    api.add_file("/zenodo/files/scan.bin", SCAN)
    api.add_json(
        "/zenodo/api/records/4242",
        {
            "files": [
                {
                    "key": "scan.bin",
                    "size": len(SCAN),
                    "checksum": f"md5:{md5(SCAN)}",
                    "links": {"self": api.url("/zenodo/files/scan.bin")},
                }
            ]
        },
    )
    # figshare: an article page with its title and version in the path
    resolver.add_redirect("/10.1234/fig.7", api.url("/articles/dataset/Brain_MRI_scans/777/2"))
    api.add_file("/figshare/ndownloader/files/7771", SCAN)
    api.add_json(
        "/figshare/v2/articles/777/versions/2/files",
        [
            {
                "name": "mri.bin",
                "size": len(SCAN),
                "download_url": api.url("/figshare/ndownloader/files/7771"),
                "computed_md5": md5(SCAN),
            }
        ],
    )
    # Dataverse: the citation page of another installation (here `storage`)
    resolver.add_redirect("/10.1234/DV.9", storage.url("/citation?persistentId=doi:10.1234/DV.9"))
    storage.add_file("/api/access/datafile/91", SCAN)
    storage.add_json(
        "/api/datasets/:persistentId/",
        {"status": "OK", "data": {"latestVersion": {"files": [dataverse_file(91, "scan.bin", SCAN)]}}},
    )
    with new_client() as client:
        targets = [
            landing_source(parse_source({"kind": "doi", "doi": doi}), settings, client)
            for doi in ("10.1234/zen.42", "10.1234/fig.7", "10.1234/DV.9")
        ]
    assert targets == [
        ZenodoSource(kind="zenodo", record="4242"),
        FigshareSource(kind="figshare", article="777", version=2),
        DataverseSource(kind="dataverse", server=storage.base_url, doi="10.1234/DV.9"),
    ]
    assert api.requests_to("/records/4242") == []  # a recognised landing page is not fetched
    for number, doi in enumerate(("10.1234/zen.42", "10.1234/fig.7", "10.1234/DV.9")):
        placed = fetch_source({"kind": "doi", "doi": doi}, tmp_path / f"job{number}", settings)
        assert [p.read_bytes() for p in placed] == [SCAN]
    assert [p.name for p in (tmp_path / "job1").iterdir()] == ["mri.bin"]


def test_a_doi_landing_on_an_unsupported_host_names_it(
    storage: LocalHTTPServer, resolver: LocalHTTPServer, settings: Settings
) -> None:
    resolver.add_redirect("/10.1234/elsewhere", storage.url("/landing/dataset.html"))
    storage.add_file("/landing/dataset.html", b"<html>a dataset page</html>", content_type="text/html")
    landing = storage.url("/landing/dataset.html")
    with pytest.raises(SourceError, match=rf"lands on {landing}, and no adapter handles localhost"):
        resolve_source({"kind": "doi", "doi": "10.1234/elsewhere"}, settings)
    with pytest.raises(SourceError, match="the resolver knows no such DOI"):
        resolve_source({"kind": "doi", "doi": "10.1234/unknown"}, settings)


# --- Dataverse -------------------------------------------------------------------------------------------


def dataverse_file(
    file_id: int, label: str, body: bytes, *, folder: str = "", restricted: bool = False, **data_file: Any
) -> dict[str, Any]:
    """A file entry of a dataset version (fields trimmed from a Harvard Dataverse response)."""
    return {
        "label": label,
        "restricted": restricted,
        **({"directoryLabel": folder} if folder else {}),
        "version": 1,
        "dataFile": {
            "id": file_id,
            "filename": label,
            "contentType": "application/octet-stream",
            "filesize": len(body),
            "md5": md5(body),
            "checksum": {"type": "MD5", "value": md5(body)},
            **data_file,
        },
    }


def serve_dataverse(api: LocalHTTPServer, *, restricted: bool) -> None:
    table_original = b"case,label\n1,tumour\n"
    table_generated = b'case\tlabel\n1\t"tumour"\n'
    api.add_file("/dv/api/access/datafile/11", SCAN)
    api.add_file("/dv/api/access/datafile/12", table_generated)  # what a plain download of 12 gives
    api.add_file("/dv/api/access/datafile/12?format=original", table_original)
    api.add_file("/dv/api/access/datafile/13", ARCHIVE)
    files = [
        dataverse_file(11, "ct_001.nii.gz", SCAN, folder="images"),
        dataverse_file(
            12,
            "labels.tab",
            table_original,
            originalFileFormat="text/csv",
            originalFileName="labels.csv",
            originalFileSize=len(table_original),
            filesize=len(table_generated),
        ),
        dataverse_file(
            13, "masks.zip", ARCHIVE, checksum={"type": "SHA-256", "value": sha256(ARCHIVE)}, md5=None
        ),
    ]
    if restricted:
        files.append(dataverse_file(14, "identifiers.csv", b"secret", restricted=True))
    api.add_json(
        "/dv/api/datasets/:persistentId/",
        {"status": "OK", "data": {"id": 5, "latestVersion": {"versionState": "RELEASED", "files": files}}},
    )


def test_dataverse_files_are_fetched_with_their_checksums_and_tabular_originals(
    tmp_path: Path, api: LocalHTTPServer, settings: Settings
) -> None:
    serve_dataverse(api, restricted=False)
    descriptor = {"kind": "dataverse", "server": api.url("/dv"), "doi": "10.7910/DVN/6ACUZJ"}
    remotes = resolve_source(descriptor, settings)
    assert [(r.name, r.url, r.verification) for r in remotes] == [
        ("images/ct_001.nii.gz", api.url("/dv/api/access/datafile/11"), "md5"),
        ("labels.csv", api.url("/dv/api/access/datafile/12?format=original"), "md5"),
        ("masks.zip", api.url("/dv/api/access/datafile/13"), "sha256"),
    ]
    listing = api.requests_to("/dv/api/datasets/:persistentId/")[0]
    assert listing.path.endswith("?persistentId=doi:10.7910/DVN/6ACUZJ")
    placed = fetch_source(descriptor, tmp_path / "job", settings)
    assert {p.relative_to(tmp_path / "job").as_posix(): p.read_bytes() for p in placed} == {
        "images/ct_001.nii.gz": SCAN,
        "labels.csv": b"case,label\n1,tumour\n",
        "masks.zip": ARCHIVE,
    }


def test_dataverse_version_is_pinned_when_given(
    tmp_path: Path, api: LocalHTTPServer, settings: Settings
) -> None:
    api.add_file("/dv/api/access/datafile/21", SCAN)
    api.add_json(
        "/dv/api/datasets/:persistentId/versions/1.0",
        {
            "status": "OK",
            "data": {
                "versionNumber": 1,
                "versionMinorNumber": 0,
                "files": [dataverse_file(21, "v1.bin", SCAN)],
            },
        },
    )
    descriptor = {
        "kind": "dataverse",
        "server": api.url("/dv/"),
        "doi": "doi:10.7910/DVN/OLD",
        "version": "1.0",
    }
    placed = fetch_source(descriptor, tmp_path / "job", settings)
    assert [(p.name, p.read_bytes()) for p in placed] == [("v1.bin", SCAN)]
    assert api.requests_to("/dv/api/datasets/:persistentId/versions/1.0")[0].path.endswith(
        "=doi:10.7910/DVN/OLD"
    )


def test_dataverse_restricted_files_are_refused_with_the_reason(
    api: LocalHTTPServer, settings: Settings
) -> None:
    serve_dataverse(api, restricted=True)
    descriptor = {"kind": "dataverse", "server": api.url("/dv"), "doi": "10.7910/DVN/6ACUZJ"}
    with pytest.raises(
        SourceError, match=r"1 file\(s\) are restricted or embargoed .*: identifiers.csv; leave"
    ):
        resolve_source(descriptor, settings)
    public = resolve_source(descriptor | {"include": ["images/*", "*.zip"]}, settings)
    assert [r.name for r in public] == ["images/ct_001.nii.gz", "masks.zip"]
    assert api.requests_to("/dv/api/access/datafile/14") == []


# --- Kaggle ----------------------------------------------------------------------------------------------


def serve_kaggle(
    api: LocalHTTPServer, storage: LocalHTTPServer, body: bytes = ARCHIVE, etag: str = '"v1"'
) -> None:
    """The dataset's download answers a redirect to a signed storage URL, as Kaggle's API does."""
    auth = {"Authorization": basic(KAGGLE_USER, KAGGLE_KEY)}
    api.add_redirect(
        "/kaggle/api/v1/datasets/download/radiology/brain-mri",
        storage.url("/kaggle-data/brain-mri.zip?X-Goog-Signature=abc"),
        require_headers=auth,
    )
    api.add_redirect(
        "/kaggle/api/v1/competitions/data/download-all/rsna-2024", "/x", status=403, require_headers=auth
    )
    storage.add_file("/kaggle-data/brain-mri.zip", body, etag=etag)


def kaggle_settings(tmp_path: Path, api: LocalHTTPServer, **overrides: Any) -> Settings:
    return make_settings(
        tmp_path, api, **{"kaggle_username": KAGGLE_USER, "kaggle_key": KAGGLE_KEY} | overrides
    )


def test_kaggle_without_an_account_names_the_settings_to_set(
    api: LocalHTTPServer, settings: Settings
) -> None:
    with pytest.raises(CredentialsMissingError) as raised:
        resolve_source({"kind": "kaggle", "dataset": "radiology/brain-mri"}, settings)
    assert raised.value.setting == "IMAGINGX_KAGGLE_USERNAME and IMAGINGX_KAGGLE_KEY"
    assert "set IMAGINGX_KAGGLE_USERNAME and IMAGINGX_KAGGLE_KEY" in str(raised.value)
    assert "kaggle.com > Settings > API" in str(raised.value)
    assert api.requests == []


def test_kaggle_archive_is_fetched_with_the_account_which_never_reaches_the_storage_host(
    tmp_path: Path, api: LocalHTTPServer, storage: LocalHTTPServer
) -> None:
    serve_kaggle(api, storage)
    settings = kaggle_settings(tmp_path, api)
    remotes = resolve_source({"kind": "kaggle", "dataset": "radiology/brain-mri"}, settings)
    assert [(r.name, r.no_checksum, r.verification) for r in remotes] == [("brain-mri.zip", True, "none")]
    placed = fetch_source({"kind": "kaggle", "dataset": "radiology/brain-mri"}, tmp_path / "job", settings)
    assert [p.read_bytes() for p in placed] == [ARCHIVE]
    # the API checked the account on the access check and on the download; the storage host saw none
    assert [r.status for r in api.requests] == [302, 302, 302]
    assert authorization_headers(api) == [basic(KAGGLE_USER, KAGGLE_KEY)] * 3
    assert [r.status for r in storage.requests] == [200] and authorization_headers(storage) == []
    assert (settings.home / "cache" / "sha256" / sha256(ARCHIVE)).exists()


def test_kaggle_refusals_say_why(tmp_path: Path, api: LocalHTTPServer, storage: LocalHTTPServer) -> None:
    serve_kaggle(api, storage)
    wrong = kaggle_settings(tmp_path, api, kaggle_key="not-the-key")
    with pytest.raises(
        SourceError, match=r"Kaggle refused the account \(HTTP 401\): check IMAGINGX_KAGGLE_USERNAME"
    ):
        resolve_source({"kind": "kaggle", "dataset": "radiology/brain-mri"}, wrong)
    settings = kaggle_settings(tmp_path, api)
    with pytest.raises(SourceError, match=r"Kaggle competition rsna-2024: .* accept its rules on kaggle.com"):
        resolve_source({"kind": "kaggle", "competition": "rsna-2024"}, settings)
    assert storage.requests == []


def test_a_file_without_a_checksum_is_cached_by_sha256_and_not_downloaded_twice(
    tmp_path: Path, api: LocalHTTPServer, storage: LocalHTTPServer
) -> None:
    serve_kaggle(api, storage)
    settings = kaggle_settings(tmp_path, api)
    descriptor = {"kind": "kaggle", "dataset": "radiology/brain-mri"}
    first = fetch_source(descriptor, tmp_path / "job1", settings)
    second = fetch_source(descriptor, tmp_path / "job2", settings)
    assert first[0].read_bytes() == second[0].read_bytes() == ARCHIVE
    assert first[0].samefile(second[0])  # both jobs link the one cached file
    assert [(r.status, r.bytes_sent) for r in storage.requests] == [(200, len(ARCHIVE)), (304, 0)]
    assert storage.requests[1].headers["If-None-Match"] == '"v1"'
    index = json.loads(next((settings.home / "cache" / "index").glob("*.json")).read_text())
    assert index["versions"] == {'"v1"': sha256(ARCHIVE)}
    # the dataset changed: a new ETag, downloaded again and cached under its own sha256
    changed = ARCHIVE[::-1]
    storage.add_file("/kaggle-data/brain-mri.zip", changed, etag='"v2"')
    third = fetch_source(descriptor, tmp_path / "job3", settings)
    assert third[0].read_bytes() == changed and storage.requests[-1].status == 200
    assert (settings.home / "cache" / "sha256" / sha256(changed)).exists()


def test_a_file_without_a_checksum_is_size_checked(tmp_path: Path, api: LocalHTTPServer) -> None:
    api.add_file("/files/archive.zip", ARCHIVE)
    settings = make_settings(tmp_path, api)
    remote = RemoteFile(
        name="archive.zip", url=api.url("/files/archive.zip"), size=len(ARCHIVE) + 1, no_checksum=True
    )
    assert remote.verification == "size only"
    with (
        Downloader(settings) as downloader,
        pytest.raises(SourceError, match="got 200000 bytes, expected 200001"),
    ):
        downloader.fetch(remote)
    assert not list((settings.home / "cache").glob("sha256/*"))


def test_a_file_without_a_checksum_and_credentials_go_over_https_only(
    tmp_path: Path, api: LocalHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, api)
    # a public address answering plain http: nothing is sent to it
    monkeypatch.setattr("workers.sources.net.resolve_checked", lambda url, settings: ["93.184.216.34"])
    remote = RemoteFile(name="a.zip", url="http://data.example.org/a.zip", no_checksum=True)
    with Downloader(settings) as downloader, pytest.raises(SourceError, match="fetched over https only"):
        downloader.fetch(remote)
    account = Credential.basic("http://data.example.org", "user", "secret")
    with (
        new_client() as client,
        pytest.raises(SourceError, match=r"refused to send the account .* over plain http"),
    ):
        open_response(client, "http://data.example.org/list", settings, credential=account)


def test_credentials_never_appear_in_errors_logs_or_reprs(
    tmp_path: Path, api: LocalHTTPServer, storage: LocalHTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    serve_kaggle(api, storage)
    storage.routes["/kaggle-data/brain-mri.zip"].status = 500
    settings = kaggle_settings(tmp_path, api)
    token = basic(KAGGLE_USER, KAGGLE_KEY).removeprefix("Basic ")
    caplog.set_level(logging.DEBUG)
    remotes = resolve_source({"kind": "kaggle", "dataset": "radiology/brain-mri"}, settings)
    with Downloader(settings, retry_delay=0) as downloader, pytest.raises(SourceError) as raised:
        downloader.fetch_into(remotes, tmp_path / "job")
    assert "HTTP 500" in str(raised.value)
    for text in (str(raised.value), caplog.text, repr(remotes), repr(remotes[0].credential), repr(settings)):
        assert KAGGLE_KEY not in text and token not in text


# --- Synapse ---------------------------------------------------------------------------------------------

FILE_ENTITY = "org.sagebionetworks.repo.model.FileEntity"
FOLDER_ENTITY = "org.sagebionetworks.repo.model.Folder"
LABELS = b"case,label\nct_001,liver\n"


def serve_synapse(
    api: LocalHTTPServer, storage: LocalHTTPServer, *, served: bytes = SCAN
) -> list[dict[str, Any]]:
    """Project syn100: README.txt and labels.csv (two pages of children) and folder images/ with ct_001.bin,
    whose download redirects to a presigned storage URL. Every API call needs the bearer token."""
    auth = {"Authorization": f"Bearer {SYNAPSE_TOKEN}"}
    files = {
        "syn300": ("README.txt", b"Synapse project\n"),
        "syn301": ("labels.csv", LABELS),
        "syn400": ("ct_001.bin", SCAN),
    }
    api.add_json(
        "/synapse/repo/v1/entity/syn100",
        {"id": "syn100", "concreteType": "org.sagebionetworks.repo.model.Project"},
    )
    api.routes["/synapse/repo/v1/entity/syn100"].require_headers = auth
    api.add_json(
        "/synapse/repo/v1/entity/syn400",
        {"id": "syn400", "name": "ct_001.bin", "concreteType": FILE_ENTITY, "versionNumber": 2},
    )
    api.routes["/synapse/repo/v1/entity/syn400"].require_headers = auth
    for number, (entity, (name, body)) in enumerate(files.items()):
        handle = 9000 + number
        preview = {
            "id": str(handle + 50),
            "concreteType": "org.sagebionetworks.repo.model.file.PreviewFileHandle",
        }
        data = {
            "id": str(handle),
            "concreteType": "org.sagebionetworks.repo.model.file.S3FileHandle",
            "fileName": name,
            "contentSize": len(body),
            "contentMd5": md5(body),
        }
        version = 2 if entity == "syn400" else 1
        api.add_json(
            f"/synapse/repo/v1/entity/{entity}/version/{version}/filehandles", {"list": [preview, data]}
        )
        api.routes[f"/synapse/repo/v1/entity/{entity}/version/{version}/filehandles"].require_headers = auth
        api.add_redirect(
            f"/synapse/file/v1/file/{handle}",
            storage.url(f"/s3/{handle}?X-Amz-Signature=xyz"),
            status=307,
            require_headers=auth,
        )
        storage.add_file(f"/s3/{handle}", served if entity == "syn400" else body)
    pages = {
        ("syn100", None): {
            "page": [
                {"id": "syn200", "name": "images", "type": FOLDER_ENTITY},
                {"id": "syn300", "name": "README.txt", "type": FILE_ENTITY, "versionNumber": 1},
            ],
            "nextPageToken": "page-2",
        },
        ("syn100", "page-2"): {
            "page": [{"id": "syn301", "name": "labels.csv", "type": FILE_ENTITY, "versionNumber": 1}]
        },
        ("syn200", None): {
            "page": [{"id": "syn400", "name": "ct_001.bin", "type": FILE_ENTITY, "versionNumber": 2}]
        },
    }
    listings: list[dict[str, Any]] = []

    def children(request: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        body = request.json()
        listings.append(body)
        return 200, {}, json.dumps(pages[(body["parentId"], body.get("nextPageToken"))]).encode()

    api.add_handler("/synapse/repo/v1/entity/children", children, require_headers=auth)
    return listings


def test_synapse_without_a_token_names_the_setting(api: LocalHTTPServer, settings: Settings) -> None:
    with pytest.raises(
        CredentialsMissingError, match="set IMAGINGX_SYNAPSE_TOKEN to a personal access token"
    ) as raised:
        resolve_source({"kind": "synapse", "entity": "syn100"}, settings)
    assert raised.value.setting == "IMAGINGX_SYNAPSE_TOKEN"
    assert api.requests == []


def test_synapse_project_is_walked_page_by_page_and_files_verified_by_md5(
    tmp_path: Path, api: LocalHTTPServer, storage: LocalHTTPServer
) -> None:
    listings = serve_synapse(api, storage)
    settings = make_settings(tmp_path, api, synapse_token=SYNAPSE_TOKEN)
    remotes = resolve_source({"kind": "synapse", "entity": "syn100"}, settings)
    assert [(r.name, r.md5) for r in remotes] == [
        ("README.txt", md5(b"Synapse project\n")),
        ("images/ct_001.bin", md5(SCAN)),
        ("labels.csv", md5(LABELS)),
    ]
    assert {(body["parentId"], body.get("nextPageToken")) for body in listings} == {
        ("syn100", None),
        ("syn100", "page-2"),
        ("syn200", None),
    }
    assert listings[0]["includeTypes"] == ["folder", "file"]
    placed = fetch_source({"kind": "synapse", "entity": "syn100"}, tmp_path / "job", settings)
    assert {p.relative_to(tmp_path / "job").as_posix(): p.read_bytes() for p in placed} == {
        "README.txt": b"Synapse project\n",
        "images/ct_001.bin": SCAN,
        "labels.csv": LABELS,
    }
    assert all(r.status != 401 for r in api.requests)  # every API call carried the token
    assert set(authorization_headers(api)) == {f"Bearer {SYNAPSE_TOKEN}"}
    assert len(storage.requests) == 3 and authorization_headers(storage) == []


def test_synapse_single_file_and_md5_mismatch(
    tmp_path: Path, api: LocalHTTPServer, storage: LocalHTTPServer
) -> None:
    serve_synapse(api, storage, served=SCAN[:-1] + b"\x01")
    settings = make_settings(tmp_path, api, synapse_token=SYNAPSE_TOKEN)
    remotes = resolve_source({"kind": "synapse", "entity": "syn400"}, settings)
    assert [(r.name, r.size) for r in remotes] == [("ct_001.bin", len(SCAN))]
    with pytest.raises(SourceError, match=rf"ct_001.bin: md5 mismatch: expected {md5(SCAN)}"):
        fetch_source({"kind": "synapse", "entity": "syn400"}, tmp_path / "job", settings)
    wrong = make_settings(tmp_path, api, synapse_token="not-the-token")
    with pytest.raises(
        SourceError, match=r"Synapse refused the token \(HTTP 401\): check IMAGINGX_SYNAPSE_TOKEN"
    ):
        resolve_source({"kind": "synapse", "entity": "syn400"}, wrong)


# --- PhysioNet -------------------------------------------------------------------------------------------

PHYSIONET_FILES = {
    "RECORDS": b"train/a\n",
    "train/a.dicom": SCAN,
    "annotations/image_labels_train.csv": LABELS,
}


def serve_physionet(api: LocalHTTPServer, project: str, *, credentialed: bool, damaged: str = "") -> None:
    auth = {"Authorization": basic(PHYSIONET_USER, PHYSIONET_PASSWORD)} if credentialed else {}
    base = f"/physionet/files/{project}/1.0.0"
    sums = "".join(f"{sha256(body)} {name}\n" for name, body in PHYSIONET_FILES.items())
    api.add_file(f"{base}/SHA256SUMS.txt", sums.encode(), content_type="text/plain", require_headers=auth)
    for name, body in PHYSIONET_FILES.items():
        api.add_file(f"{base}/{name}", body + b"!" if name == damaged else body, require_headers=auth)


def test_physionet_open_project_is_listed_and_verified_by_its_sha256sums(
    tmp_path: Path, api: LocalHTTPServer
) -> None:
    serve_physionet(api, "vindr-cxr", credentialed=False)
    settings = make_settings(
        tmp_path, api, physionet_username=PHYSIONET_USER, physionet_password=PHYSIONET_PASSWORD
    )
    descriptor = {"kind": "physionet", "project": "vindr-cxr", "version": "1.0.0"}
    remotes = resolve_source(descriptor, settings)
    assert [(r.name, r.sha256) for r in remotes] == sorted((n, sha256(b)) for n, b in PHYSIONET_FILES.items())
    placed = fetch_source(descriptor | {"include": ["train/*", "annotations/*"]}, tmp_path / "job", settings)
    assert {p.relative_to(tmp_path / "job").as_posix(): p.read_bytes() for p in placed} == {
        "annotations/image_labels_train.csv": LABELS,
        "train/a.dicom": SCAN,
    }
    assert authorization_headers(api) == []  # an open project gets no account, even one that is configured


def test_physionet_credentialed_project_needs_and_uses_the_account(
    tmp_path: Path, api: LocalHTTPServer
) -> None:
    serve_physionet(api, "mimic-cxr", credentialed=True, damaged="train/a.dicom")
    descriptor = {"kind": "physionet", "project": "mimic-cxr", "version": "1.0.0"}
    with pytest.raises(
        CredentialsMissingError, match="set IMAGINGX_PHYSIONET_USERNAME and IMAGINGX_PHYSIONET_PASSWORD"
    ):
        resolve_source(descriptor, make_settings(tmp_path, api))
    wrong = make_settings(tmp_path, api, physionet_username=PHYSIONET_USER, physionet_password="wrong")
    with pytest.raises(
        SourceError, match=r"PhysioNet refused the account \(HTTP 401\): it must be credentialed"
    ):
        resolve_source(descriptor, wrong)
    settings = make_settings(
        tmp_path, api, physionet_username=PHYSIONET_USER, physionet_password=PHYSIONET_PASSWORD
    )
    placed = fetch_source(descriptor | {"include": ["RECORDS", "annotations/*"]}, tmp_path / "job", settings)
    assert sorted(p.read_bytes() for p in placed) == sorted([b"train/a\n", LABELS])
    with pytest.raises(SourceError, match=r"train/a.dicom: sha256 mismatch"):
        fetch_source(descriptor | {"include": ["train/*"]}, tmp_path / "job2", settings)
