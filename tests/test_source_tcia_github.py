"""The `tcia` adapter (NBIA API: collection match, series listing, series ZIPs verified against md5hashes.csv,
subject sampling) and `github` sources without a tag (latest release, else the default branch's files at one
commit), against a real local HTTP server serving real DICOM slices (pydicom's CT5N)."""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import SimpleITK as sitk
from fixtures_http import LocalHTTPServer
from imaging_fixtures import CT5N

from app.core.config import Settings
from workers.imaging.layout_files import is_dicom_file
from workers.safety import UnpackLimits
from workers.sources import Downloader, FetchOptions, SourceError, fetch_source, resolve_source
from workers.sources.download import ChecksumMismatchError
from workers.sources.tcia import SeriesArchive, prepare_series_root, safe_name, sample_subjects

CT_SLICES = {path.name: path.read_bytes() for path in sorted(CT5N.iterdir())}
STUDY = "1.2.826.0.1.3680043.2.1125.1"
COLLECTIONS = ["CT-ORG", "CT Lymph Nodes", "Pancreas-CT", "LIDC-IDRI", "Restricted-Trial"]


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as running:
        yield running


@pytest.fixture
def settings(tmp_path: Path, server: LocalHTTPServer) -> Settings:
    return Settings(
        home=tmp_path / "home",
        allow_private_sources=True,
        tcia_api_url=server.url("/nbia/v1"),
        github_api_url=server.url("/github"),
        github_raw_url=server.url("/raw"),
        download_concurrency=2,
    )


# --- TCIA ------------------------------------------------------------------------------------------------------
def series_zip(files: dict[str, bytes], manifest: dict[str, str] | None = None) -> bytes:
    """What getImageWithMD5Hash answers: the files plus md5hashes.csv (their MD5s unless `manifest` says)."""
    listed = manifest if manifest is not None else {n: hashlib.md5(b).hexdigest() for n, b in files.items()}
    buffer = io.BytesIO()

    def member(name: str) -> zipfile.ZipInfo:
        # a fixed time: writestr(name) stamps the current time, so two builds a second apart differed
        return zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))

    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in files.items():
            archive.writestr(member(name), body, zipfile.ZIP_DEFLATED)
        archive.writestr(
            member("md5hashes.csv"),
            "Filename,MD5Hash\r\n" + "".join(f"{n},{d}\r\n" for n, d in listed.items()),
            zipfile.ZIP_DEFLATED,
        )
    return buffer.getvalue()


def ct_files() -> dict[str, bytes]:
    """CT5N's five slices under the names NBIA gives them (`1-1.dcm` ...)."""
    return {f"1-{index}.dcm": body for index, body in enumerate(CT_SLICES.values(), start=1)}


def series_row(
    patient: str, study: str, series: str, modality: str = "CT", images: int = 5
) -> dict[str, Any]:
    return {
        "Collection": "CT-ORG",
        "PatientID": patient,
        "StudyInstanceUID": study,
        "SeriesInstanceUID": series,
        "Modality": modality,
        "ImageCount": images,
        "FileSize": 5 * 3936,
        "BodyPartExamined": "ABDOMEN",
    }


def serve_collection(server: LocalHTTPServer, rows: list[dict[str, Any]], zips: dict[str, bytes]) -> None:
    server.add_json("/nbia/v1/getCollectionValues", [{"Collection": name} for name in COLLECTIONS])
    server.add_json("/nbia/v1/getSeries?Collection=CT-ORG", rows)
    for uid, body in zips.items():
        server.add_file(
            f"/nbia/v1/getImageWithMD5Hash?SeriesInstanceUID={uid}", body, content_type="application/zip"
        )


def fetch_tcia(
    tmp_path: Path, settings: Settings, options: FetchOptions = FetchOptions()
) -> tuple[list[SeriesArchive], Path]:
    """Resolve, download through the Downloader, then unpack and verify as the fetch unit does."""
    remotes = resolve_source({"kind": "tcia", "collection": "CT-ORG"}, settings, options=options)
    job_dir = tmp_path / "job"
    downloads = job_dir / "downloads" / "ct-org"
    Downloader(settings).fetch_into(remotes, downloads)
    root = prepare_series_root(
        remotes,
        downloads,
        job_dir / "sources" / "ct-org",
        job_dir,
        UnpackLimits.from_settings(settings),
        cache_dir=settings.home / "cache",
    )
    return [r for r in remotes if isinstance(r, SeriesArchive)], root


def read_series(folder: Path) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def test_tcia_collection_is_matched_ignoring_case_and_punctuation(
    server: LocalHTTPServer, settings: Settings
) -> None:
    serve_collection(server, [series_row("CT-ORG-001", STUDY, f"{STUDY}.1")], {})
    (remote,) = resolve_source({"kind": "tcia", "collection": "ct_org"}, settings)
    assert remote.name == f"CT-ORG-001/{STUDY}/{STUDY}.1.zip"
    # the listing was asked for under TCIA's own spelling
    assert [r.path for r in server.requests_to("/nbia/v1/getSeries")] == [
        "/nbia/v1/getSeries?Collection=CT-ORG"
    ]
    with pytest.raises(
        SourceError, match=r"TCIA lists no collection 'CT-ORX' \(of 5 collections\); nearest: CT-ORG"
    ):
        resolve_source({"kind": "tcia", "collection": "CT-ORX"}, settings)
    with pytest.raises(SourceError, match=r"TCIA lists no collection 'Brain MRI' \(of 5 collections\)$"):
        resolve_source({"kind": "tcia", "collection": "Brain MRI"}, settings)


def test_tcia_series_listing_becomes_one_zip_per_series(server: LocalHTTPServer, settings: Settings) -> None:
    rows = [
        series_row("CT-ORG-002", STUDY + "2", f"{STUDY}2.7", images=40),
        series_row("CT-ORG-001", STUDY, f"{STUDY}.1"),
        series_row("CT-ORG-001", STUDY, f"{STUDY}.1"),  # NBIA lists a series twice now and then
        series_row("Pat 3/A", STUDY + "3", f"{STUDY}3.1"),
    ]
    serve_collection(server, rows, {})
    remotes = resolve_source({"kind": "tcia", "collection": "CT-ORG"}, settings)
    assert all(isinstance(r, SeriesArchive) for r in remotes)
    safe = safe_name("Pat 3/A")
    assert safe.startswith("Pat_3_A-") and len(safe) == len("Pat_3_A-") + 8
    assert [(r.name, r.image_count, r.no_checksum, r.cache_key) for r in remotes] == [  # type: ignore[attr-defined]
        (f"CT-ORG-001/{STUDY}/{STUDY}.1.zip", 5, True, None),
        (f"CT-ORG-002/{STUDY}2/{STUDY}2.7.zip", 40, True, None),
        (f"{safe}/{STUDY}3/{STUDY}3.1.zip", 5, True, None),
    ]
    assert remotes[1].url == server.url(f"/nbia/v1/getImageWithMD5Hash?SeriesInstanceUID={STUDY}2.7")
    assert [r.listed_bytes for r in remotes] == [5 * 3936] * 3  # type: ignore[attr-defined]


def test_tcia_series_zip_is_verified_against_md5hashes_and_unpacked(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    uid = f"{STUDY}.1"
    serve_collection(server, [series_row("CT-ORG-001", STUDY, uid)], {uid: series_zip(ct_files())})
    (remote,), root = fetch_tcia(tmp_path, settings)
    folder = root / "CT-ORG-001" / STUDY / uid
    assert sorted(p.name for p in folder.iterdir()) == ["1-1.dcm", "1-2.dcm", "1-3.dcm", "1-4.dcm", "1-5.dcm"]
    assert [(folder / name).read_bytes() for name in sorted(ct_files())] == list(CT_SLICES.values())
    assert all(is_dicom_file(path) for path in folder.iterdir())
    np.testing.assert_array_equal(read_series(folder), read_series(CT5N))
    # the ZIP itself is cached under the sha256 computed while it arrived
    zipped = hashlib.sha256(series_zip(ct_files())).hexdigest()
    assert (settings.home / "cache" / "sha256" / zipped).exists()
    assert remote.verification == "none"


def test_tcia_file_whose_md5_differs_is_refused(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    uid = f"{STUDY}.1"
    files = ct_files()
    manifest = {name: hashlib.md5(body).hexdigest() for name, body in files.items()}
    files["1-3.dcm"] = files["1-3.dcm"][:-2] + b"\x00\x01"  # two voxel bytes changed in transit
    serve_collection(server, [series_row("CT-ORG-001", STUDY, uid)], {uid: series_zip(files, manifest)})
    with pytest.raises(
        SourceError,
        match=rf"1 of 1 TCIA series failed verification: TCIA series {uid}: 1-3.dcm: md5 mismatch: "
        rf"expected {manifest['1-3.dcm']}, got {hashlib.md5(files['1-3.dcm']).hexdigest()}",
    ):
        fetch_tcia(tmp_path, settings)
    sources = tmp_path / "job" / "sources"
    assert not (sources / "ct-org").exists()
    assert [p.name for p in sources.iterdir()] == []  # nothing half-verified is left behind
    # the bad ZIP left the cache: a second attempt downloads it again, and TCIA has fixed it by then
    zipped = series_zip(files, manifest)
    assert not (settings.home / "cache" / "sha256" / hashlib.sha256(zipped).hexdigest()).exists()
    server.add_file(f"/nbia/v1/getImageWithMD5Hash?SeriesInstanceUID={uid}", series_zip(ct_files()))
    shutil.rmtree(tmp_path / "job")
    _, root = fetch_tcia(tmp_path, settings)
    assert (root / "CT-ORG-001" / STUDY / uid / "1-3.dcm").read_bytes() == ct_files()["1-3.dcm"]
    assert len(server.requests_to("/nbia/v1/getImageWithMD5Hash")) == 2


def test_tcia_series_md5_mismatch_raises_checksum_error_when_unpacked_alone(tmp_path: Path) -> None:
    from workers.sources.tcia import unpack_series

    files = ct_files()
    manifest = {name: hashlib.md5(body).hexdigest() for name, body in files.items()}
    manifest["1-5.dcm"] = "0" * 32
    archive = tmp_path / "job" / "s.zip"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(series_zip(files, manifest))
    series = SeriesArchive(
        name="s.zip", url="https://x.org/s", no_checksum=True, series_uid="1.2", image_count=5
    )
    limits = UnpackLimits(10**9, 1000, 1000.0)
    with pytest.raises(
        ChecksumMismatchError, match=r"TCIA series 1.2: 1-5.dcm: md5 mismatch: expected 0{32}"
    ):
        unpack_series(archive, series, tmp_path / "job" / "s", tmp_path / "job", limits)
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == ["s.zip"]


@pytest.mark.parametrize(
    ("listed", "files", "message"),
    [
        (6, ct_files(), r"the ZIP holds 5 images, TCIA's listing says 6"),
        (
            5,
            {**ct_files(), "extra.dcm": b"DICM"},
            r"1 files are not in md5hashes.csv: extra.dcm",
        ),
    ],
)
def test_tcia_image_count_and_unlisted_files_are_refused(
    tmp_path: Path,
    server: LocalHTTPServer,
    settings: Settings,
    listed: int,
    files: dict[str, bytes],
    message: str,
) -> None:
    uid = f"{STUDY}.1"
    manifest = {name: hashlib.md5(body).hexdigest() for name, body in ct_files().items()}
    serve_collection(
        server, [series_row("CT-ORG-001", STUDY, uid, images=listed)], {uid: series_zip(files, manifest)}
    )
    with pytest.raises(SourceError, match=rf"TCIA series {uid}: {message}"):
        fetch_tcia(tmp_path, settings)


def test_tcia_collection_without_public_series_says_it_needs_access(
    server: LocalHTTPServer, settings: Settings
) -> None:
    server.add_json("/nbia/v1/getCollectionValues", [{"Collection": name} for name in COLLECTIONS])
    server.add_file("/nbia/v1/getSeries?Collection=Restricted-Trial", b"", content_type="application/json")
    with pytest.raises(SourceError) as raised:
        resolve_source({"kind": "tcia", "collection": "restricted trial"}, settings)
    message = str(raised.value)
    assert message.startswith("TCIA collection Restricted-Trial is not public (limited access)")
    assert "Request access at TCIA" in message and "`local` source" in message


def test_tcia_max_subjects_is_a_deterministic_sample_and_a_larger_cap_a_superset(
    server: LocalHTTPServer, settings: Settings
) -> None:
    patients = [f"CT-ORG-{n:03d}" for n in range(1, 13)]
    rows = [series_row(p, f"{STUDY}.{i}", f"{STUDY}.{i}.1") for i, p in enumerate(patients)]
    serve_collection(server, rows, {})

    def subjects(cap: int | None, seed: str = "imagingx") -> list[str]:
        options = FetchOptions(max_subjects=cap, seed=seed)
        remotes = resolve_source({"kind": "tcia", "collection": "CT-ORG"}, settings, options=options)
        return sorted({r.name.split("/")[0] for r in remotes})

    three, six = subjects(3), subjects(6)
    assert len(three) == 3 and len(six) == 6 and len(subjects(None)) == 12
    assert subjects(3) == three  # the same request takes the same subjects
    assert set(three) < set(six)
    assert three == sample_subjects(patients, 3, "imagingx")
    assert subjects(3, seed="other") != three


def test_tcia_labelled_only_keeps_label_series_and_their_studies(
    server: LocalHTTPServer, settings: Settings
) -> None:
    rows = [
        series_row("A", "1.1", "1.1.1", "CT"),
        series_row("A", "1.1", "1.1.2", "SEG", images=1),
        series_row("A", "1.2", "1.2.1", "CT"),  # another study of A, unlabelled
        series_row("B", "2.1", "2.1.1", "CT"),
        series_row("C", "3.1", "3.1.1", "MR"),
        series_row("C", "3.1", "3.1.2", "RTSTRUCT", images=1),
    ]
    serve_collection(server, rows, {})
    remotes = resolve_source(
        {"kind": "tcia", "collection": "CT-ORG"}, settings, options=FetchOptions(labelled_only=True)
    )
    assert [r.name for r in remotes] == [
        "A/1.1/1.1.1.zip",
        "A/1.1/1.1.2.zip",
        "C/3.1/3.1.1.zip",
        "C/3.1/3.1.2.zip",
    ]
    server.add_json("/nbia/v1/getSeries?Collection=CT-ORG", rows[:1])
    with pytest.raises(SourceError, match=r"TCIA collection CT-ORG has no SEG or RTSTRUCT series"):
        resolve_source(
            {"kind": "tcia", "collection": "CT-ORG"}, settings, options=FetchOptions(labelled_only=True)
        )


# --- GitHub without a tag ---------------------------------------------------------------------------------------
COMMIT = "3f786850e387550fdab836ed7e6dc881de23001b"
TREE = "89e6c98d92887913cadf06b2adb97f26cde4849b"


def blob_id(body: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()


def serve_repository(
    server: LocalHTTPServer,
    repo: str,
    files: dict[str, bytes],
    *,
    served: dict[str, bytes] | None = None,
    truncated: bool = False,
) -> None:
    """A repository without a release: its API answers and its files on the raw host at COMMIT. `served`
    replaces what the raw host sends for some paths (the tree still states the true blob id)."""
    server.add_json(f"/github/repos/{repo}", {"full_name": repo, "default_branch": "main"})
    server.add_json(
        f"/github/repos/{repo}/commits/main",
        {"sha": COMMIT, "commit": {"tree": {"sha": TREE}, "message": "data"}},
    )
    entries: list[dict[str, Any]] = [
        {"path": "data", "mode": "040000", "type": "tree", "sha": "a" * 40},
        {"path": "vendor/lib", "mode": "160000", "type": "commit", "sha": "b" * 40},
        {"path": "latest", "mode": "120000", "type": "blob", "sha": "c" * 40, "size": 4},
    ]
    for path, body in files.items():
        entries.append(
            {"path": path, "mode": "100644", "type": "blob", "sha": blob_id(body), "size": len(body)}
        )
        server.add_file(f"/raw/{repo}/{COMMIT}/{quote(path)}", (served or {}).get(path, body))
    server.add_json(
        f"/github/repos/{repo}/git/trees/{TREE}?recursive=1",
        {"sha": TREE, "tree": entries, "truncated": truncated},
    )


def test_github_without_tag_takes_the_latest_release(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    body = b"polyp masks" * 1000
    server.add_file("/dl/org/polyps/v2/masks.zip", body)
    server.add_json(
        "/github/repos/org/polyps/releases/latest",
        {
            "tag_name": "v2",
            "assets": [
                {
                    "name": "masks.zip",
                    "size": len(body),
                    "digest": f"sha256:{hashlib.sha256(body).hexdigest()}",
                    "browser_download_url": server.url("/dl/org/polyps/v2/masks.zip"),
                }
            ],
        },
    )
    (remote,) = resolve_source({"kind": "github", "repo": "org/polyps"}, settings)
    assert (remote.name, remote.sha256) == ("masks.zip", hashlib.sha256(body).hexdigest())
    placed = fetch_source({"kind": "github", "repo": "org/polyps"}, tmp_path / "job", settings)
    assert [p.read_bytes() for p in placed] == [body]
    assert server.requests_to("/github/repos/org/polyps/git/trees/" + TREE) == []  # no tree listing needed


def test_github_without_release_takes_the_default_branch_files_at_one_commit(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    files = {
        "README.md": b"# Atlas\n",
        "data/case 1.nii.gz": bytes(range(256)) * 40,
        "labels.csv": b"id,name\n1,liver\n",
        "empty.txt": b"",
    }
    serve_repository(server, "org/atlas", files)
    source = {"kind": "github", "repo": "org/atlas"}
    remotes = resolve_source(source, settings)
    assert [(r.name, r.git_sha1, r.size) for r in remotes] == [
        (name, blob_id(files[name]), len(files[name])) for name in sorted(files)
    ]
    assert all(f"/raw/org/atlas/{COMMIT}/" in (r.url or "") for r in remotes)
    assert {r.name: r.url for r in remotes}["data/case 1.nii.gz"] == server.url(
        f"/raw/org/atlas/{COMMIT}/data/case%201.nii.gz"
    )
    placed = fetch_source(source, tmp_path / "job", settings)
    assert {p.relative_to(tmp_path / "job").as_posix(): p.read_bytes() for p in placed} == files
    assert (settings.home / "cache" / "git_sha1" / blob_id(files["labels.csv"])).exists()
    only_data = resolve_source({**source, "include": ["data/*"]}, settings)
    assert [r.name for r in only_data] == ["data/case 1.nii.gz"]


def test_github_blob_whose_id_differs_is_refused(
    tmp_path: Path, server: LocalHTTPServer, settings: Settings
) -> None:
    files = {"README.md": b"# Atlas\n", "data/scan.bin": b"\x01" * 5000}
    altered = b"\x02" * 5000
    serve_repository(server, "org/atlas", files, served={"data/scan.bin": altered})
    with pytest.raises(SourceError) as raised:
        fetch_source({"kind": "github", "repo": "org/atlas"}, tmp_path / "job", settings)
    message = str(raised.value)
    assert message.startswith("1 of 2 files failed: data/scan.bin: git_sha1 mismatch")
    assert f"expected {blob_id(files['data/scan.bin'])}, got {blob_id(altered)}" in message
    assert not (tmp_path / "job" / "data" / "scan.bin").exists()
    assert (tmp_path / "job" / "README.md").read_bytes() == b"# Atlas\n"


def test_github_truncated_tree_is_refused(server: LocalHTTPServer, settings: Settings) -> None:
    serve_repository(server, "org/huge", {"README.md": b"x"}, truncated=True)
    with pytest.raises(
        SourceError, match=rf"GitHub repo org/huge@{COMMIT} \(main\): GitHub truncated the file listing"
    ):
        resolve_source({"kind": "github", "repo": "org/huge"}, settings)


def test_github_lfs_pointers_are_reported(server: LocalHTTPServer, settings: Settings) -> None:
    oid = hashlib.sha256(b"the real scan").hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 123456789\n".encode()
    files = {
        ".gitattributes": b"*.nii.gz filter=lfs diff=lfs merge=lfs -text\n",
        "scans/ct_001.nii.gz": pointer,
        "scans/tiny.nii.gz": b"not a pointer but small",  # under LFS's pattern, yet real content
        "README.md": b"# Scans\n",
    }
    serve_repository(server, "org/lfs", files)
    with pytest.raises(
        SourceError,
        match=rf"GitHub repo org/lfs@{COMMIT} \(main\): 1 files are Git LFS pointers .*: scans/ct_001.nii.gz; "
        "leave them out with `include`",
    ):
        resolve_source({"kind": "github", "repo": "org/lfs"}, settings)
    # only the small files LFS covers were read while resolving, not README.md
    assert server.requests_to(f"/raw/org/lfs/{COMMIT}/README.md") == []
    kept = resolve_source({"kind": "github", "repo": "org/lfs", "include": ["*.md", "scans/tiny*"]}, settings)
    assert [r.name for r in kept] == ["README.md", "scans/tiny.nii.gz"]
