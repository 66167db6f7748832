"""Source descriptors, adapters (http, Zenodo, Hugging Face, local) and the downloader, against a real local
HTTP server: resume, checksums, the content cache, address refusal."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures_http import LocalHTTPServer, self_signed_tls

from app.common.descriptors import ExplicitLayout, HttpSource, PairBySuffix
from app.core.config import Settings
from workers.safety import is_public_address
from workers.sources import (
    ChecksumMismatchError,
    Downloader,
    RemoteFile,
    SizeMismatchError,
    SourceError,
    fetch_source,
    parse_source,
    resolve_source,
)

DATA = random.Random(7).randbytes(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as running:
        yield running


def make_settings(tmp_path: Path, server: LocalHTTPServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": tmp_path / "home",
        "allow_private_sources": True,
        "zenodo_api_url": server.url("/zenodo/api"),
        "huggingface_url": server.url("/hf"),
        "figshare_api_url": server.url("/figshare/v2"),
        "github_api_url": server.url("/github"),
        "download_concurrency": 2,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path, server: LocalHTTPServer) -> Settings:
    return make_settings(tmp_path, server)


def http_source(url: str, **file: Any) -> dict[str, Any]:
    return {"kind": "http", "files": [{"url": url, "sha256": SHA, "size": len(DATA), **file}]}


def cache_leftovers(settings: Settings) -> list[str]:
    return sorted(
        p.name for p in (settings.home / "cache").rglob("*") if p.is_file() and "locks" not in p.parts
    )


# --- descriptors -----------------------------------------------------------------------------------------


def test_descriptors_of_every_kind_parse() -> None:
    source = parse_source(
        {
            "kind": "http",
            "files": [{"url": "https://example.org/d/Task03_Liver.tar", "md5": MD5, "size": 10}],
            "labels": {"1": "liver", "2": "liver tumour"},
            "layout": {
                "images": "imagesTr/*.nii.gz",
                "labels": "labelsTr/*.nii.gz",
                "pairing": {"by": "suffix", "suffix": "_seg"},
                "split": {"test": ["imagesTs/*"]},
            },
        }
    )
    assert isinstance(source, HttpSource)
    assert source.labels == {1: "liver", 2: "liver tumour"}
    assert isinstance(source.layout, ExplicitLayout) and isinstance(source.layout.pairing, PairBySuffix)
    assert source.files[0].file_name == "Task03_Liver.tar"
    named = parse_source(
        {"kind": "http", "files": [{"url": "https://a.org/f/CT%20scans.zip?dl=1", "md5": MD5}]}
    )
    assert named.files[0].file_name == "CT scans.zip"
    assert parse_source({"kind": "zenodo", "record": 6802613}).record == "6802613"
    assert parse_source('{"kind": "huggingface", "repo": "org/name"}').revision == "main"
    assert parse_source({"kind": "local", "path": "/data/BraTS2021"}).layout == "auto"


@pytest.mark.parametrize(
    ("descriptor", "message"),
    [
        ({"kind": "ftp"}, "`kind` must be one of http, zenodo, huggingface, figshare, github, local"),
        ({"record": "1"}, "`kind` must be one of"),
        (
            {"kind": "http", "files": [{"url": "https://example.org/a.zip"}]},
            "files.0: Value error, needs a sha256 or md5 checksum",
        ),
        ({"kind": "http", "files": [{"url": "ftp://example.org/a.zip", "md5": MD5}]}, "http:// or https://"),
        ({"kind": "http", "files": []}, "files: List should have at least 1 item"),
        (
            {
                "kind": "http",
                "files": [
                    {"url": "https://a.org/x/f.zip", "md5": MD5},
                    {"url": "https://b.org/f.zip", "md5": MD5},
                ],
            },
            "several files are named f.zip",
        ),
        ({"kind": "zenodo", "record": "10.5281/zenodo.1"}, "record: String should match pattern"),
        ({"kind": "huggingface", "repo": "no-slash"}, "repo: String should match pattern"),
        ({"kind": "local", "path": "data/x"}, "path: Value error, must be an absolute path"),
        ({"kind": "local", "path": "/d", "labels": {"-1": "x"}}, "label id -1 is negative"),
        ({"kind": "local", "path": "/d", "layout": {"images": "../*.nii"}}, "relative glob without `..`"),
        (
            {
                "kind": "local",
                "path": "/d",
                "layout": {"images": "*", "pairing": {"by": "regex", "pattern": "(\\d+)"}},
            },
            "named group `(?P<case>...)`",
        ),
        ({"kind": "zenodo", "record": "1", "surprise": True}, "surprise: Extra inputs are not permitted"),
        (  # only the official test set is taken from a source; train/validation are split by patient
            {"kind": "local", "path": "/d", "layout": {"images": "*", "split": {"train": ["a*"]}}},
            "split.train.[key]: Input should be 'test'",
        ),
    ],
)
def test_invalid_descriptors_say_what_is_wrong(descriptor: dict[str, Any], message: str) -> None:
    with pytest.raises(SourceError, match="invalid source descriptor") as excinfo:
        parse_source(descriptor)
    assert message in str(excinfo.value)


# --- downloader ------------------------------------------------------------------------------------------


def test_http_source_is_fetched_verified_and_placed(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    server.add_file("/files/scan.bin", DATA)
    placed = fetch_source(http_source(server.url("/files/scan.bin")), tmp_path / "job", settings)
    assert placed == [tmp_path / "job" / "scan.bin"]
    assert placed[0].read_bytes() == DATA
    assert (settings.home / "cache" / "sha256" / SHA).exists()
    assert cache_leftovers(settings) == [SHA]


def test_second_fetch_of_the_same_content_downloads_nothing(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    server.add_file("/files/scan.bin", DATA)
    fetch_source(http_source(server.url("/files/scan.bin")), tmp_path / "job1", settings)
    # another bundle, another name and URL for the same content
    server.add_file("/mirror/copy.bin", DATA)
    placed = fetch_source(http_source(server.url("/mirror/copy.bin")), tmp_path / "job2", settings)
    assert placed[0].read_bytes() == DATA
    assert len(server.requests) == 1
    assert placed[0].samefile(settings.home / "cache" / "sha256" / SHA)


def test_broken_transfer_resumes_with_range_and_if_range(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    route = server.add_file("/files/scan.bin", DATA, cut_at=120_000, cuts=1)
    placed = fetch_source(http_source(server.url("/files/scan.bin")), tmp_path / "job", settings)
    assert placed[0].read_bytes() == DATA
    first, second = server.requests_to("/files/scan.bin")
    assert "Range" not in first.headers and first.bytes_sent == 120_000
    assert second.headers["Range"] == "bytes=120000-"
    assert second.headers["If-Range"] == route.etag
    assert second.status == 206 and second.bytes_sent == len(DATA) - 120_000


def test_an_interrupted_download_is_resumed_by_the_next_fetch(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    server.add_file("/files/scan.bin", DATA, cut_at=50_000, cuts=1)
    remote = RemoteFile(name="scan.bin", url=server.url("/files/scan.bin"), size=len(DATA), sha256=SHA)
    with pytest.raises(
        SourceError, match=r"scan.bin: download failed after 1 attempts: .*broke off after 50000"
    ):
        Downloader(settings, attempts=1).fetch(remote)
    assert (settings.home / "cache" / "partial" / f"sha256-{SHA}.part").stat().st_size == 50_000
    path = Downloader(settings, attempts=1).fetch(remote)
    assert path.read_bytes() == DATA
    assert sum(r.bytes_sent for r in server.requests) == len(DATA)
    assert cache_leftovers(settings) == [SHA]


def test_a_file_changed_since_the_broken_transfer_starts_over(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    server.add_file("/files/scan.bin", b"old" * 50_000, cut_at=1000, cuts=1)
    remote = RemoteFile(name="scan.bin", url=server.url("/files/scan.bin"), size=len(DATA), sha256=SHA)
    with pytest.raises(SourceError):
        Downloader(settings, attempts=1).fetch(remote)
    server.add_file("/files/scan.bin", DATA)  # new content, new ETag: If-Range no longer matches
    assert Downloader(settings, attempts=1).fetch(remote).read_bytes() == DATA
    last = server.requests[-1]
    assert last.headers["Range"] == "bytes=1000-" and last.status == 200


def test_checksum_mismatch_fails_clearly_and_keeps_nothing(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    server.add_file("/files/scan.bin", DATA)
    wrong = "0" * 64
    with pytest.raises(SourceError, match=f"sha256 mismatch: expected {wrong}, got {SHA}"):
        fetch_source(http_source(server.url("/files/scan.bin"), sha256=wrong), tmp_path / "job", settings)
    assert cache_leftovers(settings) == []
    assert not (tmp_path / "job" / "scan.bin").exists()
    with pytest.raises(ChecksumMismatchError, match="md5 mismatch"):
        Downloader(settings).fetch(RemoteFile(name="s", url=server.url("/files/scan.bin"), md5="0" * 32))


def test_size_mismatch_and_http_errors_fail_clearly(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    server.add_file("/files/scan.bin", DATA)
    url = server.url("/files/scan.bin")
    downloader = Downloader(settings)
    with pytest.raises(SizeMismatchError, match=f"got {len(DATA)} bytes, expected {len(DATA) + 1}"):
        downloader.fetch(RemoteFile(name="a", url=url, size=len(DATA) + 1, sha256=SHA))
    with pytest.raises(SizeMismatchError, match="sent more than the expected 1000 bytes"):
        downloader.fetch(RemoteFile(name="b", url=url, size=1000, sha256=SHA))
    with pytest.raises(
        SourceError, match=r"missing.bin: GET http://127\.0\.0\.1:\d+/nowhere answered HTTP 404"
    ):
        downloader.fetch(RemoteFile(name="missing.bin", url=server.url("/nowhere"), sha256=SHA))
    assert cache_leftovers(settings) == []


def test_redirects_are_followed(tmp_path: Path, server: LocalHTTPServer, settings: Settings) -> None:
    server.add_file("/cdn/blob", DATA)
    server.add_redirect("/files/scan.bin", server.url("/cdn/blob"))
    placed = fetch_source(http_source(server.url("/files/scan.bin")), tmp_path / "job", settings)
    assert placed[0].read_bytes() == DATA


def test_private_addresses_are_refused_unless_allowed(tmp_path: Path, server: LocalHTTPServer) -> None:
    server.add_file("/files/scan.bin", DATA)
    strict = make_settings(tmp_path, server, allow_private_sources=False)
    port = server.base_url.rsplit(":", 1)[1]
    for url in (server.url("/files/scan.bin"), f"http://localhost:{port}/files/scan.bin"):
        with pytest.raises(
            SourceError, match=r"resolves to non-public address .*IMAGINGX_ALLOW_PRIVATE_SOURCES"
        ):
            fetch_source(http_source(url), tmp_path / "job", strict)
    with pytest.raises(SourceError, match=r"non-public address 127\.0\.0\.1"):
        resolve_source({"kind": "zenodo", "record": "1"}, strict)
    assert server.requests == []
    assert not (tmp_path / "job").exists()


def test_https_connects_to_the_checked_address_and_still_verifies_the_certificate(tmp_path: Path) -> None:
    # the connection goes to the resolved address, while SNI and the certificate check use the host name
    server_tls, client_tls = self_signed_tls(tmp_path, "localhost")
    with LocalHTTPServer(tls=server_tls, host_name="localhost") as server:
        server.add_file("/files/scan.bin", DATA)
        settings = make_settings(tmp_path, server)
        with httpx.Client(verify=client_tls) as client:
            remote = RemoteFile(
                name="scan.bin", url=server.url("/files/scan.bin"), size=len(DATA), sha256=SHA
            )
            assert Downloader(settings, client=client).fetch(remote).read_bytes() == DATA
            assert server.requests[0].headers["Host"] == server.base_url.removeprefix("https://")
            # the same server named by its address: the certificate does not cover it, so nothing is fetched
            by_address = server.url("/files/scan.bin").replace("localhost", "127.0.0.1")
            with pytest.raises(SourceError, match="CERTIFICATE_VERIFY_FAILED"):
                Downloader(settings, client=client, attempts=1).fetch(
                    RemoteFile(name="again.bin", url=by_address, md5=MD5)
                )


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "::",
    ],
)
def test_non_public_addresses_are_recognised(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "188.185.79.172", "2606:4700::6810:84e5", "64:ff9b::5db8:d70e"]
)
def test_public_addresses_pass(address: str) -> None:
    assert is_public_address(address)


def test_downloads_run_at_most_download_concurrency_at_once(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    files = []
    for index in range(5):
        body = DATA[index * 1000 : index * 1000 + 5000]
        server.add_file(f"/files/{index}.bin", body, delay=0.2)
        files.append({"url": server.url(f"/files/{index}.bin"), "sha256": hashlib.sha256(body).hexdigest()})
    placed = fetch_source({"kind": "http", "files": files}, tmp_path / "job", settings)
    assert sorted(p.name for p in placed) == [f"{i}.bin" for i in range(5)]
    assert server.max_in_flight == 2


def test_failures_of_several_files_are_all_reported(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    server.add_file("/files/ok.bin", DATA)
    source = {
        "kind": "http",
        "files": [
            {"url": server.url("/files/ok.bin"), "sha256": SHA},
            {"url": server.url("/files/gone1.bin"), "md5": MD5},
            {"url": server.url("/files/gone2.bin"), "md5": MD5},
        ],
    }
    with pytest.raises(
        SourceError, match=r"2 of 3 files failed: gone1.bin: .*HTTP 404; gone2.bin: .*HTTP 404"
    ):
        fetch_source(source, tmp_path / "job", settings)


# --- Zenodo ----------------------------------------------------------------------------------------------


def zenodo_record(server: LocalHTTPServer, record: str, files: dict[str, bytes]) -> dict[str, Any]:
    """What `GET /api/records/{id}` answers (trimmed from a real Zenodo response)."""
    entries = []
    for name, body in files.items():
        content_path = f"/zenodo/api/records/{record}/files/{name}/content"
        server.add_file(content_path, body)
        entries.append(
            {
                "id": hashlib.md5(name.encode()).hexdigest(),
                "key": name,
                "size": len(body),
                "checksum": f"md5:{hashlib.md5(body).hexdigest()}",
                "links": {"self": server.url(content_path)},
            }
        )
    return {
        "id": int(record),
        "recid": record,
        "doi": f"10.5281/zenodo.{record}",
        "conceptrecid": "6802612",
        "created": "2022-07-06T09:46:42.120Z",
        "metadata": {
            "title": "Medical Segmentation Decathlon (subset)",
            "access_right": "open",
            "license": {"id": "cc-by-sa-4.0"},
            "resource_type": {"title": "Dataset", "type": "dataset"},
        },
        "files": entries,
        "links": {"self": server.url(f"/zenodo/api/records/{record}")},
    }


def test_zenodo_record_files_are_fetched_with_md5(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    files = {"Task04_Hippocampus.tar": DATA, "README.md": b"# Hippocampus\n"}
    server.add_json("/zenodo/api/records/6802613", zenodo_record(server, "6802613", files))
    remotes = resolve_source({"kind": "zenodo", "record": "6802613"}, settings)
    assert [(r.name, r.md5, r.size) for r in remotes] == [
        ("README.md", hashlib.md5(b"# Hippocampus\n").hexdigest(), 14),
        ("Task04_Hippocampus.tar", MD5, len(DATA)),
    ]
    placed = fetch_source(
        {"kind": "zenodo", "record": "6802613", "include": ["*.tar"]}, tmp_path / "job", settings
    )
    assert [p.name for p in placed] == ["Task04_Hippocampus.tar"]
    assert placed[0].read_bytes() == DATA
    assert (settings.home / "cache" / "md5" / MD5).exists()


def test_zenodo_errors_are_clear(server: LocalHTTPServer, settings: Settings) -> None:
    with pytest.raises(
        SourceError, match=r"Zenodo record 999: GET .*/zenodo/api/records/999 answered HTTP 404"
    ):
        resolve_source({"kind": "zenodo", "record": "999"}, settings)
    restricted = zenodo_record(server, "5", {})
    restricted["metadata"]["access_right"] = "restricted"
    server.add_json("/zenodo/api/records/5", restricted)
    with pytest.raises(
        SourceError, match=r"Zenodo record 5 lists no downloadable files \(access: restricted\)"
    ):
        resolve_source({"kind": "zenodo", "record": "5"}, settings)


# --- Hugging Face ----------------------------------------------------------------------------------------

COMMIT = "4f5e1c0de5a1f0b1e2d3c4b5a69788776655aa00"


def git_blob_id(body: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()


def serve_hf_dataset(server: LocalHTTPServer, files: dict[str, bytes], lfs: set[str]) -> None:
    """The Hub's revision and (paginated) tree endpoints for `org/chest-xray`, and its resolve URLs."""
    server.add_json(
        "/hf/api/datasets/org/chest-xray/revision/main",
        {"_id": "6571", "id": "org/chest-xray", "sha": COMMIT, "private": False, "gated": False},
    )
    entries = [{"type": "directory", "oid": "a" * 40, "size": 0, "path": "data"}]
    for path, body in files.items():
        entry: dict[str, Any] = {"type": "file", "size": len(body), "path": path}
        if path in lfs:
            entry["oid"] = "b" * 40  # the pointer file's blob id, not the content's
            entry["lfs"] = {"oid": hashlib.sha256(body).hexdigest(), "size": len(body), "pointerSize": 134}
        else:
            entry["oid"] = git_blob_id(body)
        entries.append(entry)
        server.add_file(f"/hf/datasets/org/chest-xray/resolve/{COMMIT}/{path}", body)
    tree = f"/hf/api/datasets/org/chest-xray/tree/{COMMIT}"
    next_page = server.url(f"{tree}/page2")
    server.add_json(tree, entries[:2], headers={"Link": f'<{next_page}>; rel="next"'})
    server.add_json(f"{tree}/page2", entries[2:])


def test_huggingface_dataset_files_are_fetched_at_a_pinned_commit(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    files = {
        "README.md": b"---\nlicense: cc-by-4.0\n---\n# chest x-ray\n",
        "data/train-00000-of-00001.parquet": DATA,
        "data/test-00000-of-00001.parquet": DATA[:1000],
        ".gitattributes": b"*.parquet filter=lfs\n",
    }
    serve_hf_dataset(
        server, files, lfs={"data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet"}
    )
    remotes = resolve_source({"kind": "huggingface", "repo": "org/chest-xray"}, settings)
    assert [r.name for r in remotes] == [
        "README.md",
        "data/test-00000-of-00001.parquet",
        "data/train-00000-of-00001.parquet",
    ]
    assert remotes[2].sha256 == SHA and remotes[0].git_sha1 == git_blob_id(files["README.md"])
    assert all(f"/resolve/{COMMIT}/" in (r.url or "") for r in remotes)
    placed = fetch_source({"kind": "huggingface", "repo": "org/chest-xray"}, tmp_path / "job", settings)
    for path in placed:
        assert path.read_bytes() == files[path.relative_to(tmp_path / "job").as_posix()]


def test_huggingface_blob_id_mismatch_and_gated_repos_fail_clearly(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    serve_hf_dataset(server, {"README.md": b"right"}, lfs=set())
    server.add_file(f"/hf/datasets/org/chest-xray/resolve/{COMMIT}/README.md", b"wrong")
    with pytest.raises(SourceError, match=r"README\.md: git_sha1 mismatch"):
        fetch_source({"kind": "huggingface", "repo": "org/chest-xray"}, tmp_path / "job", settings)
    server.add_json("/hf/api/datasets/org/gated/revision/v1.0", {"error": "Access restricted"}, status=401)
    with pytest.raises(SourceError, match=r"org/gated@v1.0 is gated or private"):
        resolve_source({"kind": "huggingface", "repo": "org/gated", "revision": "v1.0"}, settings)


# --- local -----------------------------------------------------------------------------------------------


def test_local_sources_read_only_inside_the_allowed_roots(tmp_path: Path, server: LocalHTTPServer) -> None:
    root = tmp_path / "data"
    (root / "BraTS2021" / "case1").mkdir(parents=True)
    (root / "BraTS2021" / "case1" / "t1.nii.gz").write_bytes(DATA)
    (root / "BraTS2021" / "README").write_text("BraTS")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    descriptor = {"kind": "local", "path": str(root / "BraTS2021")}

    with pytest.raises(SourceError, match="local sources are disabled"):
        resolve_source(descriptor, make_settings(tmp_path, server))
    settings = make_settings(tmp_path, server, local_source_roots=[root])
    with pytest.raises(SourceError, match="is outside the allowed roots"):
        resolve_source({"kind": "local", "path": str(secret)}, settings)
    with pytest.raises(SourceError, match="is outside the allowed roots"):
        resolve_source({"kind": "local", "path": str(root / ".." / "secret.txt")}, settings)

    placed = fetch_source(descriptor, tmp_path / "job", settings)
    assert sorted(p.relative_to(tmp_path / "job").as_posix() for p in placed) == ["README", "case1/t1.nii.gz"]
    assert (tmp_path / "job" / "case1" / "t1.nii.gz").read_bytes() == DATA
    assert server.requests == []

    os.symlink(secret, root / "BraTS2021" / "leak.txt")
    with pytest.raises(SourceError, match=r"leak\.txt links outside the allowed roots"):
        resolve_source(descriptor, settings)


# --- figshare and GitHub releases --------------------------------------------------------------------------


def figshare_files(server: LocalHTTPServer, article: str, files: dict[str, bytes]) -> list[dict[str, Any]]:
    """What `GET /v2/articles/{id}/files` answers (fields trimmed from a real figshare response)."""
    entries = []
    for index, (name, body) in enumerate(files.items()):
        path = f"/figshare/ndownloader/files/{article}{index}"
        server.add_file(path, body)
        entries.append(
            {
                "id": int(f"{article}{index}"),
                "name": name,
                "size": len(body),
                "is_link_only": False,
                "download_url": server.url(path),
                "supplied_md5": "",
                "computed_md5": hashlib.md5(body).hexdigest(),
            }
        )
    return entries


def test_figshare_article_files_are_fetched_with_md5(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    files = {"chest_xray.zip": DATA, "labels.csv": b"id,label\n"}
    server.add_json("/figshare/v2/articles/4321/files", figshare_files(server, "4321", files))
    remotes = resolve_source({"kind": "figshare", "article": 4321}, settings)
    assert [(r.name, r.md5) for r in remotes] == [
        ("chest_xray.zip", MD5),
        ("labels.csv", hashlib.md5(b"id,label\n").hexdigest()),
    ]
    placed = fetch_source(
        {"kind": "figshare", "article": "4321", "include": ["*.zip"]}, tmp_path / "job", settings
    )
    assert [p.name for p in placed] == ["chest_xray.zip"] and placed[0].read_bytes() == DATA
    # a pinned version asks for that version's files
    server.add_json(
        "/figshare/v2/articles/4321/versions/2/files", figshare_files(server, "4322", {"a.zip": DATA})
    )
    assert [
        r.name for r in resolve_source({"kind": "figshare", "article": "4321", "version": 2}, settings)
    ] == ["a.zip"]


def test_figshare_files_are_listed_page_by_page(
    server: LocalHTTPServer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.sources import figshare

    monkeypatch.setattr(figshare, "PAGE_SIZE", 2)
    entries = figshare_files(server, "55", {"a.zip": DATA, "b.zip": DATA, "c.zip": DATA})
    base = "/figshare/v2/articles/55/files"
    server.add_json(f"{base}?page=1&page_size=2", entries[:2])
    server.add_json(f"{base}?page=2&page_size=2", entries[2:])
    assert [r.name for r in resolve_source({"kind": "figshare", "article": 55}, settings)] == [
        "a.zip",
        "b.zip",
        "c.zip",
    ]


def test_figshare_link_only_files_are_refused(server: LocalHTTPServer, settings: Settings) -> None:
    entries = figshare_files(server, "77", {"data.zip": DATA})
    entries[0].update(is_link_only=True, computed_md5="")
    server.add_json("/figshare/v2/articles/77/files", entries)
    with pytest.raises(SourceError, match=r"figshare article 77: file data.zip is a link to another host"):
        resolve_source({"kind": "figshare", "article": "77"}, settings)
    with pytest.raises(SourceError, match=r"figshare article 78: GET .* answered HTTP 404"):
        resolve_source({"kind": "figshare", "article": "78"}, settings)


def github_release(server: LocalHTTPServer, repo: str, tag: str, assets: dict[str, bytes]) -> dict[str, Any]:
    """What `GET /repos/{repo}/releases/tags/{tag}` answers (trimmed), assets with their sha256 digests."""
    listed = []
    for name, body in assets.items():
        path = f"/gh-downloads/{repo}/releases/download/{tag}/{name}"
        server.add_file(path, body)
        listed.append(
            {
                "name": name,
                "size": len(body),
                "digest": f"sha256:{hashlib.sha256(body).hexdigest()}",
                "browser_download_url": server.url(path),
            }
        )
    return {"tag_name": tag, "name": f"{repo} {tag}", "assets": listed}


def test_github_release_assets_are_fetched_with_sha256(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    release = github_release(server, "org/polyps", "v1.0", {"polyps.tar.gz": DATA, "notes.txt": b"hi"})
    server.add_json("/github/repos/org/polyps/releases/tags/v1.0", release)
    source = {"kind": "github", "repo": "org/polyps", "tag": "v1.0", "include": ["*.tar.gz"]}
    (remote,) = resolve_source(source, settings)
    assert (remote.name, remote.sha256, remote.size) == ("polyps.tar.gz", SHA, len(DATA))
    placed = fetch_source(source, tmp_path / "job", settings)
    assert placed[0].read_bytes() == DATA
    assert (settings.home / "cache" / "sha256" / SHA).exists()


def test_github_assets_without_a_digest_are_refused(server: LocalHTTPServer, settings: Settings) -> None:
    release = github_release(server, "org/old", "2019", {"data.zip": DATA})
    del release["assets"][0]["digest"]
    server.add_json("/github/repos/org/old/releases/tags/2019", release)
    with pytest.raises(
        SourceError, match=r"GitHub release org/old@2019: asset data.zip states no sha256 digest"
    ):
        resolve_source({"kind": "github", "repo": "org/old", "tag": "2019"}, settings)
    with pytest.raises(SourceError, match=r"repo: String should match pattern"):
        resolve_source({"kind": "github", "repo": "no-slash", "tag": "v1"}, settings)
