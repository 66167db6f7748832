"""Unpacking archives safely: malicious tar and zip files built here are refused with nothing written anywhere
(the whole temporary root is listed before and after), and honest archives unpack completely."""

from __future__ import annotations

import fcntl
import http.server
import io
import stat
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.common.descriptors import parse_source
from app.core.config import Settings
from workers.safety import UnpackLimits, UnsafeArchiveError, is_public_address, unpack_archive
from workers.sources.base import RemoteFile, SourceError
from workers.sources.download import Downloader, DownloadTooSlow

LIMITS = UnpackLimits(max_bytes=10 * 2**20, max_members=100, max_ratio=200)
ROOMY = UnpackLimits(max_bytes=2**30, max_members=100, max_ratio=200)  # only the ratio can catch a bomb


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.fixture
def job(tmp_path: Path) -> Path:
    (tmp_path / "job").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path / "job"


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tar_file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def tar_link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def make_zip(path: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            zf.writestr(info, data)
    return path


def assert_refused(archive: Path, job: Path, message: str, limits: UnpackLimits = LIMITS) -> None:
    root = job.parent
    before = listing(root)
    with pytest.raises(UnsafeArchiveError, match=message):
        unpack_archive(archive, job / "unpacked", job, limits)
    assert listing(root) == before, "a refused archive left files behind"


def test_tar_with_parent_path_is_refused(job: Path) -> None:
    archive = make_tar(
        job.parent / "a.tar", [tar_file("ok.txt", b"fine"), tar_file("../../outside/evil.txt", b"x")]
    )
    assert_refused(archive, job, r"points outside the archive \(`..`\)")


def test_tar_with_absolute_path_is_refused(job: Path) -> None:
    evil = str(job.parent / "outside" / "abs.txt")
    archive = make_tar(job.parent / "a.tar.gz", [tar_file(evil, b"x")], mode="w:gz")
    assert_refused(archive, job, "has an absolute path")


def test_tar_symlink_to_outside_is_refused(job: Path) -> None:
    outside = str(job.parent / "outside")
    for index, (target, name) in enumerate([(outside, "link"), ("../../../outside", "deep/link")]):
        archive = make_tar(
            job.parent / f"s{index}.tar",
            [tar_file("first.nii", b"fine"), tar_link(name, target), tar_file(f"{name}/evil.txt", b"x")],
        )
        assert_refused(archive, job, "outside the destination|absolute|outside the archive")


def test_tar_hard_link_to_outside_is_refused(job: Path) -> None:
    secret = job.parent / "outside" / "secret"
    secret.write_text("secret")
    archive = make_tar(job.parent / "h.tar", [tar_link("stolen", str(secret), tarfile.LNKTYPE)])
    assert_refused(archive, job, "outside the destination|absolute")


def test_tar_device_files_are_refused(job: Path) -> None:
    info = tarfile.TarInfo("dev/null")
    info.type = tarfile.CHRTYPE
    archive = make_tar(job.parent / "d.tar", [(info, None)])
    assert_refused(archive, job, "special file")


def test_zip_with_parent_or_absolute_paths_is_refused(job: Path) -> None:
    for index, name in enumerate(["../outside/evil.txt", "a/../../evil.txt", "..\\evil.txt"]):
        archive = make_zip(job.parent / f"p{index}.zip", [("ok.txt", b"fine"), (zipfile.ZipInfo(name), b"x")])
        assert_refused(archive, job, r"outside the archive \(`..`\)")
    archive = make_zip(job.parent / "abs.zip", [(zipfile.ZipInfo(str(job.parent / "outside" / "a")), b"x")])
    assert_refused(archive, job, "has an absolute path")


def test_zip_symlink_is_refused(job: Path) -> None:
    link = zipfile.ZipInfo("images/link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = make_zip(
        job.parent / "l.zip", [("images/a.png", b"png"), (link, str(job.parent / "outside").encode())]
    )
    assert_refused(archive, job, "is a symlink")


def test_zip_bomb_is_refused_before_anything_is_written(job: Path) -> None:
    archive = make_zip(job.parent / "bomb.zip", [("zeros.raw", bytes(50 * 2**20))])
    assert archive.stat().st_size < 100_000
    assert_refused(archive, job, r"compression ratio \d+ exceeds 200 \(zip bomb\?\)", ROOMY)
    assert_refused(archive, job, "unpacks to more than 10485760 bytes", LIMITS)


def test_tar_gz_bomb_is_refused(job: Path) -> None:
    archive = make_tar(job.parent / "bomb.tar.gz", [tar_file("zeros.raw", bytes(20 * 2**20))], mode="w:gz")
    assert_refused(archive, job, "compression ratio", ROOMY)


def test_too_many_members_are_refused(job: Path) -> None:
    members = [(f"f{i}.txt", b"%d" % i) for i in range(101)]
    assert_refused(make_zip(job.parent / "many.zip", members), job, "more than 100 members")
    tar_members = [tar_file(f"f{i}.txt", b"%d" % i) for i in range(101)]
    assert_refused(make_tar(job.parent / "many.tar", tar_members), job, "more than 100 members")


def test_target_outside_the_job_folder_is_refused(job: Path) -> None:
    archive = make_zip(job.parent / "ok.zip", [("a.txt", b"a")])
    before = listing(job.parent)
    for target in (job.parent / "outside" / "x", job / ".." / "outside" / "x", job):
        with pytest.raises(UnsafeArchiveError, match="not inside the job folder"):
            unpack_archive(archive, target, job, LIMITS)
    assert listing(job.parent) == before


def test_not_an_archive_is_refused(job: Path) -> None:
    plain = job.parent / "scan.nii.gz"
    plain.write_bytes(b"\x1f\x8b not really")
    assert_refused(plain, job, "neither a zip nor a tar archive")


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz", "tar.xz"])
def test_honest_archives_unpack_completely_and_idempotently(job: Path, kind: str) -> None:
    files = {
        "Task04_Hippocampus/dataset.json": b'{"name": "Hippocampus"}',
        "Task04_Hippocampus/imagesTr/hippocampus_001.nii.gz": bytes(range(256)) * 40,
        "Task04_Hippocampus/labelsTr/hippocampus_001.nii.gz": bytes(range(128)) * 40,
    }
    if kind == "zip":
        archive = make_zip(job.parent / "t.zip", list(files.items()))
    else:
        mode = {"tar": "w", "tar.gz": "w:gz", "tar.xz": "w:xz"}[kind]
        archive = make_tar(job.parent / f"t.{kind}", [tar_file(n, d) for n, d in files.items()], mode=mode)
    target = unpack_archive(archive, job / "unpacked", job, LIMITS)
    assert target == (job / "unpacked").resolve()
    assert {
        p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()
    } == files
    assert listing(job) == sorted(["unpacked", *(f"unpacked/{p}" for p in listing(target))])
    assert unpack_archive(archive, job / "unpacked", job, LIMITS) == target


def test_tar_internal_symlink_is_kept(job: Path) -> None:
    archive = make_tar(
        job.parent / "i.tar", [tar_file("data/a.nii", b"a"), tar_link("latest.nii", "data/a.nii")]
    )
    target = unpack_archive(archive, job / "unpacked", job, LIMITS)
    assert (target / "latest.nii").read_bytes() == b"a"


def test_damaged_archives_are_refused(job: Path) -> None:
    archive = make_tar(job.parent / "t.tar.gz", [tar_file("a.nii", bytes(range(256)) * 400)], mode="w:gz")
    archive.write_bytes(archive.read_bytes()[:-200])
    assert_refused(archive, job, "t.tar.gz is damaged")
    zipped = make_zip(job.parent / "z.zip", [("a.nii", bytes(range(256)) * 400)])
    data = bytearray(zipped.read_bytes())
    data[60] ^= 0xFF  # inside the deflated data: the CRC no longer matches
    zipped.write_bytes(bytes(data))
    assert_refused(zipped, job, "z.zip is damaged")


def test_tar_gz_member_count_is_checked_before_any_member_is_written(
    job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # empty members: no size nor ratio limit can catch them, only the count; extraction writes each one it
    # meets, so the count must be known before the first is written
    tar_members = [tar_file(f"d{i // 1000}/f{i}.txt", b"") for i in range(5_000)]
    archive = make_tar(job.parent / "empty-members.tar.gz", tar_members, mode="w:gz")
    written: list[str] = []
    original_makefile = tarfile.TarFile.makefile

    def recording_makefile(self: tarfile.TarFile, tarinfo: tarfile.TarInfo, targetpath: str) -> None:
        written.append(tarinfo.name)
        original_makefile(self, tarinfo, targetpath)

    monkeypatch.setattr(tarfile.TarFile, "makefile", recording_makefile)
    limits = UnpackLimits(max_bytes=2**30, max_members=4_000, max_ratio=1e9)
    assert_refused(archive, job, "more than 4000 members", limits)
    assert written == []
    # the same archive under a roomier limit is written completely, through the recorder
    unpack_archive(archive, job / "all", job, UnpackLimits(2**30, 5_000, 1e9))
    assert len(written) == 5_000
    assert (job / "all" / "d4" / "f4999.txt").read_bytes() == b""


@pytest.mark.parametrize(
    "address",
    [
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254 (cloud metadata)
        "2002:808:808::1",  # 6to4 of a public address: still a relay workers do not use
        "fec0::1",  # site-local
        "feff:ffff::1",  # the top of fec0::/10
    ],
)
def test_6to4_and_site_local_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/a.nii.gz",
        "http://[zzz]/a.nii.gz",
        "http://[::1]x/a.nii.gz",
        "http://[::1]:99999/a",
        "http://a]b/c",
    ],
)
def test_malformed_ipv6_urls_are_refused_when_the_descriptor_is_set(url: str) -> None:
    descriptor = {"kind": "http", "files": [{"url": url, "sha256": "0" * 64, "name": "a.nii.gz"}]}
    with pytest.raises(SourceError, match=r"files\.0\.url: .*malformed"):
        parse_source(descriptor)


def test_well_formed_ipv6_urls_are_accepted_in_descriptors() -> None:
    url = "https://[2606:4700::6810:84e5]:8443/data/a.nii.gz"
    source = parse_source({"kind": "http", "files": [{"url": url, "sha256": "0" * 64}]})
    assert source.files[0].url == url
    assert source.files[0].file_name == "a.nii.gz"


# --- slow servers ------------------------------------------------------------------------------------------


class _TricklingHandler(http.server.BaseHTTPRequestHandler):
    """Promises 2,000 bytes; `/trickle` sends one byte per second, `/hang` sends nothing after the headers."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2000")
        self.send_header("ETag", '"v1"')
        self.end_headers()
        try:
            for _ in range(2000):
                if self.path == "/trickle":
                    self.wfile.write(b"x")
                    self.wfile.flush()
                time.sleep(1)
        except OSError:
            pass  # the client gave up: what the test wants

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def trickling_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TricklingHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/trickle", "/hang"])
def test_a_slow_server_is_cut_off_by_the_size_scaled_deadline_and_the_lock_released(
    tmp_path: Path, trickling_server: str, path: str
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        allow_private_sources=True,
        download_grace_seconds=1.0,
        download_min_bytes_per_second=1000,  # deadline: 1 s + 2,000 bytes / 1,000 bytes/s = 3 s
    )
    remote = RemoteFile(name="slow.bin", url=trickling_server + path, size=2000, sha256="0" * 64)
    outcome: list[BaseException | None] = []

    def fetch() -> None:
        try:
            Downloader(settings, attempts=3, retry_delay=0.1).fetch(remote)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(timeout=20)
    elapsed = time.monotonic() - started
    assert not worker.is_alive(), "the download was still running after 20 s"
    assert isinstance(outcome[0], DownloadTooSlow), outcome
    assert "too slow" in str(outcome[0]) and "IMAGINGX_DOWNLOAD_MIN_BYTES_PER_SECOND" in str(outcome[0])
    assert 2.5 < elapsed < 6.0
    # the content's lock is free: another worker could take it at once
    lock = tmp_path / "home" / "cache" / "locks" / f"sha256-{'0' * 64}.lock"
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(handle, fcntl.LOCK_UN)
    # what arrived stays for a resume
    partial = tmp_path / "home" / "cache" / "partial" / f"sha256-{'0' * 64}.part"
    assert partial.exists() and partial.stat().st_size <= 6
    if path == "/trickle":
        assert partial.read_bytes() == b"x" * partial.stat().st_size and partial.stat().st_size >= 1
