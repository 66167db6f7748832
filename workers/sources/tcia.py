"""`tcia` sources: a public radiology collection of The Cancer Imaging Archive, through its NBIA REST API (v1).

The calls (the names `tcia_utils.nbia` uses; no login for public collections):

- `GET {api}/getCollectionValues`: `[{"Collection": "CT-ORG"}, ...]`. The descriptor's collection is matched
  ignoring case and punctuation (`ct_org`, `CT ORG` and `CT-ORG` agree); no match is an error naming the
  nearest names.
- `GET {api}/getSeries?Collection=<name>`: one row per series, with `PatientID`, `StudyInstanceUID`,
  `SeriesInstanceUID`, `Modality`, `ImageCount`, `FileSize`. NBIA answers an empty body (or `[]`) for a
  collection it lists but will not show anonymously: a limited-access collection, refused with what the user
  must do (request access at TCIA, then attach the approved copy as a `local` source).
- `GET {api}/getImageWithMD5Hash?SeriesInstanceUID=<uid>`: the series as a ZIP of its DICOM files plus
  `md5hashes.csv` (`Filename,MD5Hash`, one row per file).

Each series is one `SeriesArchive` named `<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>.zip` (names made
file-system safe). TCIA publishes no checksum or size of the ZIP itself (NBIA builds it on request), so it is
marked `no_checksum`: the downloader takes it over https only and caches it under the sha256 it computes while
downloading. The real verification comes after the download: `prepare_series_root` (for the fetch unit, in
place of the generic archive unpacking) unpacks every ZIP to
`<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/`, checks every file against `md5hashes.csv`, that the ZIP
holds no file the manifest does not list, and that the number of files is the listing's `ImageCount`. Only a
verified folder appears (by rename); the manifest is removed so the folder holds DICOM files only. A ZIP that
fails is dropped from the download cache (given `cache_dir`), so the next attempt downloads it again.

FetchOptions: `max_subjects` keeps the PatientIDs with the smallest seeded hash (`sample_subjects`), so a
larger cap takes a superset. `labelled_only` keeps, from the listing alone, the SEG and RTSTRUCT series and
the other series of the studies that hold one: which image series a label object references is inside the
DICOM file, not in the listing, so a labelled study's other series (e.g. a PET beside the labelled CT) come
along; subjects without any SEG/RTSTRUCT are dropped. Labels that TCIA publishes as NIfTI or other files on
the collection's page are not in NBIA at all.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlencode

import httpx

from app.common.descriptors import TciaSource
from app.core.config import Settings
from workers.safety import UnpackLimits, UnsafeArchiveError, UnsafeSourceError, unpack_archive
from workers.sources.base import NO_OPTIONS, FetchOptions, RemoteFile, SourceError
from workers.sources.download import ChecksumMismatchError
from workers.sources.net import open_response

LABEL_MODALITIES = frozenset({"SEG", "RTSTRUCT"})
MANIFEST = "md5hashes.csv"
MAX_LISTING_BYTES = 512 * 1024 * 1024  # the largest collections list ~100k series at ~1 kB each
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SeriesArchive(RemoteFile):
    """One series as NBIA's ZIP: a RemoteFile (no checksum nor size of its own) plus what its listing row says:
    `image_count`, which `unpack_series` verifies the unpacked files against, and `listed_bytes` (the listing's
    FileSize, the DICOM files' total), which only estimates the download (a size cap can reserve it first)."""

    series_uid: str = ""
    image_count: int = 0
    modality: str = ""
    listed_bytes: int | None = None


@dataclass(frozen=True)
class _Series:
    patient: str
    study: str
    series: str
    modality: str
    image_count: int
    listed_bytes: int | None


def normalised(name: str) -> str:
    """Letters and digits only, lower case: how a collection name is matched."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def safe_name(value: str) -> str:
    """A file-system safe folder name for a PatientID or UID. A value that had to change gets a short hash of
    the original appended, so two ids that differ only in unsafe characters stay two folders."""
    cleaned = _UNSAFE.sub("_", value).strip("._")
    if cleaned == value:
        return value
    return f"{cleaned or 'id'}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def sample_subjects(subjects: Iterable[str], max_subjects: int | None, seed: str) -> list[str]:
    """At most `max_subjects` subjects, those with the smallest seeded hash (ties by id), in id order.

    The hash is salted apart from the train/test split's (workers.imaging.splits), so the sample is not
    drawn from one end of the split: the smallest split scores are the test subjects."""
    unique = sorted(set(subjects))
    if max_subjects is None or len(unique) <= max_subjects:
        return unique

    def score(subject: str) -> bytes:
        return hashlib.sha256(f"{seed}\x00subject-sample\x00{subject}".encode()).digest()

    return sorted(sorted(unique, key=lambda subject: (score(subject), subject))[:max_subjects])


def _get_rows(client: httpx.Client, url: str, settings: Settings, what: str) -> list[dict[str, Any]]:
    """GET an NBIA listing: a JSON array of objects; NBIA sends an empty body when nothing matches."""
    try:
        response, final_url = open_response(client, url, settings, {"Accept": "application/json"})
        with contextlib.closing(response):
            if response.status_code == 204:
                return []
            if response.status_code != 200:
                raise SourceError(f"{what}: GET {final_url} answered HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_LISTING_BYTES:
                    raise SourceError(f"{what}: GET {final_url} sent more than {MAX_LISTING_BYTES} bytes")
    except UnsafeSourceError as exc:
        raise SourceError(f"{what}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise SourceError(f"{what}: GET {url} failed: {exc}") from exc
    if not bytes(body).strip():
        return []
    try:
        rows = json.loads(body)
    except ValueError as exc:
        raise SourceError(f"{what}: GET {final_url} did not return JSON") from exc
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise SourceError(f"{what}: GET {final_url} did not return a list of objects")
    return rows


def match_collection(wanted: str, listed: Sequence[str]) -> str:
    """TCIA's spelling of the collection `wanted` names (case and punctuation ignored); SourceError naming
    the nearest collections when none matches."""
    key = normalised(wanted)
    matches = sorted({name for name in listed if normalised(name) == key})
    if len(matches) > 1:
        exact = [name for name in matches if name == wanted]
        if not exact:
            raise SourceError(f"TCIA collection {wanted!r} is ambiguous: {', '.join(matches)}")
        return exact[0]
    if matches:
        return matches[0]
    by_key = {normalised(name): name for name in listed}
    near = [by_key[k] for k in difflib.get_close_matches(key, list(by_key), n=5, cutoff=0.6)]
    hint = f"; nearest: {', '.join(near)}" if near else ""
    raise SourceError(f"TCIA lists no collection {wanted!r} (of {len(listed)} collections){hint}")


def _series_rows(rows: list[dict[str, Any]], what: str) -> list[_Series]:
    found: dict[str, _Series] = {}
    for row in rows:
        values = {key: str(row.get(key) or "").strip() for key in ("PatientID", "StudyInstanceUID")}
        uid = str(row.get("SeriesInstanceUID") or "").strip()
        if not uid or not all(values.values()):
            raise SourceError(
                f"{what}: a series row lacks PatientID, StudyInstanceUID or SeriesInstanceUID: {row}"
            )
        # JSON values of any type (or missing): int() raising is what says the row states none
        image_count: Any = row.get("ImageCount")
        file_size: Any = row.get("FileSize")
        try:
            count = int(image_count)
        except (TypeError, ValueError) as exc:
            raise SourceError(f"{what}: series {uid} states no ImageCount") from exc
        try:
            listed_bytes: int | None = int(float(file_size))
        except (TypeError, ValueError):
            listed_bytes = None  # an estimate only: its absence costs nothing but the early reservation
        found[uid] = _Series(
            patient=values["PatientID"],
            study=values["StudyInstanceUID"],
            series=uid,
            modality=str(row.get("Modality") or "").strip().upper(),
            image_count=count,
            listed_bytes=listed_bytes,
        )
    return sorted(found.values(), key=lambda s: (s.patient, s.study, s.series))


def _labelled(series: list[_Series]) -> list[_Series]:
    """SEG/RTSTRUCT series and every series of a study holding one (module docstring: why the study)."""
    studies = {s.study for s in series if s.modality in LABEL_MODALITIES}
    return [s for s in series if s.study in studies]


def resolve(
    source: TciaSource, settings: Settings, client: httpx.Client, options: FetchOptions = NO_OPTIONS
) -> list[RemoteFile]:
    api = settings.tcia_api_url.rstrip("/")
    listed = _get_rows(client, f"{api}/getCollectionValues", settings, "TCIA collections")
    names = [str(row.get("Collection")) for row in listed if row.get("Collection")]
    collection = match_collection(source.collection, names)
    what = f"TCIA collection {collection}"
    rows = _get_rows(client, f"{api}/getSeries?{urlencode({'Collection': collection})}", settings, what)
    if not rows:
        raise SourceError(
            f"{what} is not public (limited access): TCIA lists it but shows no series without approval. "
            "Request access at TCIA (cancerimagingarchive.net), download the approved copy yourself and attach "
            "it as a `local` source"
        )
    series = _series_rows(rows, what)
    if options.labelled_only:
        series = _labelled(series)
        if not series:
            raise SourceError(
                f"{what} has no SEG or RTSTRUCT series, so labelled series only takes nothing (labels that TCIA "
                "publishes as files on the collection's page are not in its NBIA API)"
            )
    keep = set(sample_subjects((s.patient for s in series), options.max_subjects, options.seed))
    return [
        SeriesArchive(
            name=f"{safe_name(s.patient)}/{safe_name(s.study)}/{safe_name(s.series)}.zip",
            url=f"{api}/getImageWithMD5Hash?{urlencode({'SeriesInstanceUID': s.series})}",
            series_uid=s.series,
            image_count=s.image_count,
            modality=s.modality,
            listed_bytes=s.listed_bytes,
            no_checksum=True,
        )
        for s in series
        if s.patient in keep
    ]


# -- after the download: unpack and verify ----------------------------------------------------------------------
def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest(folder: Path, what: str) -> dict[str, str]:
    path = folder / MANIFEST
    if not path.is_file():
        raise SourceError(f"{what}: the ZIP holds no {MANIFEST}, so its files cannot be verified")
    listed: dict[str, str] = {}
    for row in csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise SourceError(f"{what}: {MANIFEST} has a row without an MD5: {row}")
        name, digest = row[0].strip(), row[1].strip().lower()
        if not listed and name.lower() == "filename":
            continue  # the header
        if not re.fullmatch(r"[0-9a-f]{32}", digest):
            raise SourceError(f"{what}: {MANIFEST} gives {name} the MD5 {digest!r}, not 32 hex digits")
        listed[PurePosixPath(name.replace("\\", "/")).as_posix()] = digest
    return listed


def verify_series_folder(folder: Path, series: SeriesArchive) -> int:
    """Check an unpacked series against its `md5hashes.csv` and the listing's ImageCount, then remove the
    manifest. Returns the number of files. Raises ChecksumMismatchError for a file whose MD5 differs,
    SourceError for a missing manifest, a file missing from it or from the ZIP, or a count that differs."""
    what = f"TCIA series {series.series_uid or series.name}"
    listed = _manifest(folder, what)
    present = {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() or path.is_symlink()
    } - {MANIFEST}
    if missing := sorted(set(listed) - present):
        raise SourceError(
            f"{what}: {len(missing)} files in {MANIFEST} are not in the ZIP: {', '.join(missing[:5])}"
        )
    if unlisted := sorted(present - set(listed)):
        raise SourceError(f"{what}: {len(unlisted)} files are not in {MANIFEST}: {', '.join(unlisted[:5])}")
    for name, expected in sorted(listed.items()):
        actual = _md5(folder / name)
        if actual != expected:
            raise ChecksumMismatchError(f"{what}: {name}: md5 mismatch: expected {expected}, got {actual}")
    if len(listed) != series.image_count:
        raise SourceError(
            f"{what}: the ZIP holds {len(listed)} images, TCIA's listing says {series.image_count}"
        )
    (folder / MANIFEST).unlink()
    return len(listed)


def unpack_series(
    archive: Path, series: SeriesArchive, target: Path, job_dir: Path, limits: UnpackLimits
) -> Path:
    """Unpack one series ZIP (safely, within `limits`) to `target` and verify it (`verify_series_folder`).
    `target` appears only verified, by rename, so an existing one is a finished earlier run; on any error
    nothing is left behind."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{uuid.uuid4().hex}.unverified")
    try:
        unpack_archive(archive, scratch, job_dir, limits)
        verify_series_folder(scratch, series)
        os.rename(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _evict(archive: Path, cache_dir: Path) -> None:
    """Drop a ZIP that failed verification from the download cache (where the job's copy is a hard link)."""
    digest = hashlib.sha256()
    with open(archive, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    cached = cache_dir / "sha256" / digest.hexdigest()
    with contextlib.suppress(OSError):
        if cached.samefile(archive):
            cached.unlink()


def prepare_series_root(
    remotes: Sequence[RemoteFile],
    downloads: Path,
    target: Path,
    job_dir: Path,
    limits: UnpackLimits,
    cache_dir: Path | None = None,
) -> Path:
    """The folder of a fetched `tcia` source: each SeriesArchive, downloaded to `downloads/<name>`, unpacked
    and verified to `target/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/`. Built aside and renamed, so
    an existing `target` is a finished earlier run. Every series is attempted; SourceError lists every failure
    (a damaged or unsafe ZIP included). `cache_dir`: the Downloader's cache, from which a failed ZIP is
    dropped."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    failures = []
    try:
        for remote in remotes:
            if not isinstance(remote, SeriesArchive):
                raise SourceError(f"{remote.name} is not a TCIA series archive")
            folder = staging / remote.name.removesuffix(".zip")
            archive = downloads / remote.name
            if not archive.is_file():
                failures.append(f"TCIA series {remote.series_uid}: {remote.name} was not downloaded")
                continue
            try:
                unpack_series(archive, remote, folder, job_dir, limits)
            except (SourceError, UnsafeArchiveError) as exc:
                failures.append(str(exc))
                if cache_dir is not None:
                    _evict(archive, cache_dir)
        if failures:
            raise SourceError(
                f"{len(failures)} of {len(remotes)} TCIA series failed verification: " + "; ".join(failures)
            )
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
