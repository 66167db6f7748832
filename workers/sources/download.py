"""The downloader: fetches resolved files into a content-addressed cache and places them in a job folder.

- A file is streamed to `cache/partial/<algo>-<digest>.part`; an interrupted transfer resumes with `Range` and
  `If-Range: <ETag>` (a changed file answers 200 and starts over), retried a few times within one fetch.
- Its size and checksum are verified, then it is published by rename to `cache/<algo>/<digest>` (read-only),
  so a second fetch of the same content, by any job, downloads nothing.
- One lock file per content keeps two workers from writing the same partial file.
- Files land in the job folder by hard link (copy across file systems), each published by rename.
- Every fetch has a deadline that scales with the file: `download_grace_seconds` + size /
  `download_min_bytes_per_second` (retries included; a file of unknown size earns 1 / rate seconds per byte
  received), and no single wait lasts longer than the grace time. A server sending 1 byte per second, or nothing
  at all, is cut off (DownloadTooSlow) and the content's lock released for the next try.
- A download to a host that needs the operator's account carries the file's Credential, which net.open_response
  sends to that host only (never to the storage host a redirect leads to).

Files whose host publishes no checksum (`RemoteFile.no_checksum`, e.g. a Kaggle archive) are taken too, but only
over https (every redirect hop; loopback in tests), with their size checked when the host states it. Their sha256
is computed while the bytes arrive and the file is cached under `cache/sha256/<digest>` like any other. An index
`cache/index/<key>.json`, key = sha256 of (url, stated size), maps the response's strong ETag to that digest; a
later fetch sends `If-None-Match` with the ETags it holds, and a `304 Not Modified` (or a 200 naming a held ETag,
closed before its body) uses the cached file: the same archive is not downloaded twice. A host that sends no
strong ETag gets no index entry, so its file is downloaded again (and still stored once, by content).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.core.config import Settings
from workers.safety import UnsafeSourceError
from workers.sources.base import RemoteFile, SourceError
from workers.sources.net import new_client, open_response

CHUNK = 1024 * 1024
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
STOP_CHECK_SECONDS = 1.0  # how often a transfer asks whether its job still wants it
INDEX_VERSIONS = 8  # ETags remembered per (url, size) of a file without a checksum; the oldest are forgotten


class ChecksumMismatchError(SourceError):
    pass


class DownloadStopped(Exception):
    """The job a download was for has stopped (cancelled or failed). Not a SourceError: nothing is wrong with
    the source. The partial file stays in the cache, so another job resumes it."""


class SizeMismatchError(SourceError):
    pass


class DownloadTooSlow(SourceError):
    """A download ran past its size-scaled deadline (module docstring). The partial file stays, so a later
    fetch resumes it."""


@dataclass
class _Deadline:
    """When one fetch must end: `grace` + `size` / `rate` seconds after `start`; for a file of unknown size,
    `received` bytes (so far, this fetch) stand in for `size`."""

    start: float
    grace: float
    rate: float
    size: int | None
    received: int = 0

    def left(self) -> float:
        budget = self.size if self.size is not None else self.received
        return self.start + self.grace + budget / self.rate - time.monotonic()

    def wait_timeout(self) -> float:
        """The longest any single wait (connect, one read) may take now."""
        return max(0.01, min(self.left(), self.grace))


class _Retry(Exception):
    """A transfer broke off in a way that a new attempt (resuming) may fix."""


@dataclass(frozen=True)
class _Received:
    """How one transfer ended: `cached_etag` when the server confirmed a version already in the cache (nothing
    was written), else `sha256` of the whole partial file (when asked for) and the response's strong `etag`."""

    cached_etag: str | None = None
    sha256: str | None = None
    etag: str | None = None


def _hasher(remote: RemoteFile) -> Any:
    algorithm, _ = remote.cache_key or ("sha256", "")
    if algorithm == "git_sha1":
        if remote.size is None:
            raise SourceError(f"{remote.name}: a git blob id needs the file size")
        hasher = hashlib.sha1(usedforsecurity=False)
        hasher.update(b"blob %d\0" % remote.size)
        return hasher
    # md5 and sha1 name content here; they guard against corruption, not against an attacker
    return hashlib.new(algorithm, usedforsecurity=algorithm not in ("md5", "sha1"))


def _feed(hasher: Any, path: Path) -> None:
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK):
            hasher.update(chunk)


def _discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)
    partial.with_suffix(".etag").unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Downloader:
    def __init__(
        self,
        settings: Settings,
        cache_dir: Path | None = None,
        client: httpx.Client | None = None,
        attempts: int = 3,
        retry_delay: float = 1.0,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """`should_stop`: asked about once a second while bytes flow (and before each file); True ends the
        transfer with DownloadStopped, so cancelling a job does not wait for gigabytes it no longer wants."""
        self.settings = settings
        self.should_stop = should_stop
        self.cache_dir = cache_dir or settings.home / "cache"
        self._owns_client = client is None
        self.client = client or new_client()
        self.attempts = max(1, attempts)
        self.retry_delay = retry_delay  # seconds before the first retry, doubling after each

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cached_path(self, remote: RemoteFile) -> Path | None:
        key = remote.cache_key
        return None if key is None else self.cache_dir / key[0] / key[1]

    def fetch(self, remote: RemoteFile) -> Path:
        """The verified content of `remote`: its cache path, or for a local file the file itself."""
        if remote.path is not None:
            return remote.path
        final = self.cached_path(remote)
        key = remote.cache_key
        if final is None or key is None:  # the one is None exactly when the other is
            if remote.no_checksum:
                return self._fetch_without_checksum(remote)
            raise SourceError(f"{remote.name}: no checksum known, so it cannot be verified nor cached")
        if final.exists():
            return final
        self._check_stop(remote)
        algorithm, digest = key
        partial = self.cache_dir / "partial" / f"{algorithm}-{digest}.part"
        with _locked(self.cache_dir / "locks" / f"{algorithm}-{digest}.lock"):
            if final.exists():  # another worker finished it while we waited
                return final
            partial.parent.mkdir(parents=True, exist_ok=True)
            self._transfer_with_retries(remote, partial)
            self._verify(remote, partial, key)
            self._publish(partial, final)
        return final

    def _fetch_without_checksum(self, remote: RemoteFile) -> Path:
        """A file whose host publishes no checksum: https only, size checked when stated, cached under the
        sha256 computed while it arrives, and not downloaded again while the host names the same ETag
        (module docstring)."""
        assert remote.url is not None
        key = hashlib.sha256(f"{remote.url}\n{remote.size}".encode()).hexdigest()
        partial = self.cache_dir / "partial" / f"url-{key}.part"
        index_path = self.cache_dir / "index" / f"{key}.json"
        self._check_stop(remote)
        with _locked(self.cache_dir / "locks" / f"url-{key}.lock"):
            versions = _read_index(index_path)
            held = {
                etag: digest
                for etag, digest in versions.items()
                if (self.cache_dir / "sha256" / digest).exists()
            }
            partial.parent.mkdir(parents=True, exist_ok=True)
            received = self._transfer_with_retries(remote, partial, known_etags=held, hash_sha256=True)
            if received.cached_etag is not None:
                return self.cache_dir / "sha256" / held[received.cached_etag]
            size = partial.stat().st_size
            if remote.size is not None and size != remote.size:
                _discard(partial)
                raise SizeMismatchError(f"{remote.name}: got {size} bytes, expected {remote.size}")
            digest = received.sha256
            if digest is None:
                hasher = hashlib.sha256()
                _feed(hasher, partial)
                digest = hasher.hexdigest()
            final = self.cache_dir / "sha256" / digest
            # the same content may be arriving under its published sha256 for another source right now
            with _locked(self.cache_dir / "locks" / f"sha256-{digest}.lock"):
                if final.exists():
                    _discard(partial)
                else:
                    self._publish(partial, final)
            if received.etag:
                versions.pop(received.etag, None)
                versions[received.etag] = digest
                _write_index(index_path, remote.url, remote.size, versions)
        return final

    def _transfer_with_retries(self, remote: RemoteFile, partial: Path, **how: Any) -> _Received:
        have = partial.stat().st_size if partial.exists() else 0
        deadline = _Deadline(
            start=time.monotonic(),
            grace=self.settings.download_grace_seconds,
            rate=self.settings.download_min_bytes_per_second,
            size=None if remote.size is None else max(remote.size - have, 0),
        )
        for attempt in range(1, self.attempts + 1):
            try:
                return self._transfer(remote, partial, deadline=deadline, **how)
            except _Retry as exc:
                if deadline.left() <= 0:
                    raise self._too_slow(remote, deadline) from exc
                if attempt == self.attempts:
                    raise SourceError(
                        f"{remote.name}: download failed after {self.attempts} attempts: {exc}"
                    ) from exc
                time.sleep(self.retry_delay * 2 ** (attempt - 1))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _too_slow(self, remote: RemoteFile, deadline: _Deadline) -> DownloadTooSlow:
        elapsed = time.monotonic() - deadline.start
        return DownloadTooSlow(
            f"{remote.name}: download too slow ({deadline.received} bytes in {elapsed:.0f} s; at least "
            f"{deadline.rate} bytes/s after {deadline.grace:g} s are needed: "
            "IMAGINGX_DOWNLOAD_MIN_BYTES_PER_SECOND, IMAGINGX_DOWNLOAD_GRACE_SECONDS)"
        )

    def _publish(self, partial: Path, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        partial.chmod(0o444)  # shared by hard links with every job: nobody may edit it in place
        os.replace(partial, final)
        partial.with_suffix(".etag").unlink(missing_ok=True)

    def _transfer(
        self,
        remote: RemoteFile,
        partial: Path,
        deadline: _Deadline,
        known_etags: Collection[str] = (),
        hash_sha256: bool = False,
    ) -> _Received:
        """One attempt at the rest of `remote` into `partial` (resuming what it holds), ending by `deadline`.
        `known_etags`: versions already cached, asked for with If-None-Match; `hash_sha256`: compute the whole
        file's sha256 meanwhile."""
        assert remote.url is not None
        etag_path = partial.with_suffix(".etag")
        have = partial.stat().st_size if partial.exists() else 0
        etag = etag_path.read_text() if etag_path.exists() else ""
        if remote.size is not None and have >= remote.size and have > 0:
            # complete from an earlier attempt, only the verification is left
            return _Received(etag=etag or None)
        # identity: byte ranges and checksums are about the file's bytes, not a re-encoded stream
        headers = {"Accept-Encoding": "identity"}
        if have and etag:
            headers |= {"Range": f"bytes={have}-", "If-Range": etag}
        if known_etags:
            headers["If-None-Match"] = ", ".join(known_etags)
        resuming = "Range" in headers
        limit = remote.size if remote.size is not None else self.settings.download_max_file_bytes
        if deadline.left() <= 0:
            raise self._too_slow(remote, deadline)
        try:
            response, url = open_response(
                self.client,
                remote.url,
                self.settings,
                headers,
                credential=remote.credential,
                https_only=remote.no_checksum,
                timeout=deadline.wait_timeout(),
            )
        except UnsafeSourceError as exc:
            raise SourceError(f"{remote.name}: {exc}") from exc
        except httpx.TransportError as exc:
            raise _Retry(f"GET {remote.url}: {exc}") from exc
        with contextlib.closing(response):
            response_etag = response.headers.get("etag", "")
            if known_etags and response.status_code == 304:
                only = next(iter(known_etags)) if len(known_etags) == 1 else ""
                confirmed = response_etag or only
                if confirmed not in known_etags:
                    raise SourceError(f"{remote.name}: GET {url} answered 304 for a version not in the cache")
                return _Received(cached_etag=confirmed)
            if response.status_code == 200 and response_etag in known_etags:
                # the host ignored If-None-Match but names a version we hold: closing skips its body
                return _Received(cached_etag=response_etag)
            if response.status_code == 206 and resuming:
                if not response.headers.get("content-range", "").startswith(f"bytes {have}-"):
                    raise SourceError(f"{remote.name}: GET {url} answered an unexpected Content-Range")
                mode = "ab"
            elif response.status_code == 200:
                mode, have = "wb", 0
            elif response.status_code == 416 and resuming:
                _discard(partial)
                raise _Retry(f"GET {url}: the server refused to resume (HTTP 416)")
            elif response.status_code in TRANSIENT_STATUS:
                raise _Retry(f"GET {url} answered HTTP {response.status_code}")
            else:
                raise SourceError(f"{remote.name}: GET {url} answered HTTP {response.status_code}")
            # a weak ETag cannot validate a byte range (RFC 9110, If-Range), so such a file restarts on failure
            strong_etag = response_etag if response_etag and not response_etag.startswith("W/") else ""
            if strong_etag:
                etag_path.write_text(strong_etag)
            else:
                etag_path.unlink(missing_ok=True)
            hasher = hashlib.sha256() if hash_sha256 else None
            if hasher is not None and mode == "ab":
                _feed(hasher, partial)
            with open(partial, mode) as sink:
                try:
                    # iter_raw without a chunk size hands over bytes as they arrive, so a transfer that breaks
                    # off keeps everything received for the resume
                    next_check = time.monotonic() + STOP_CHECK_SECONDS
                    for chunk in response.iter_raw():
                        if time.monotonic() >= next_check:
                            self._check_stop(remote)
                            next_check = time.monotonic() + STOP_CHECK_SECONDS
                        have += len(chunk)
                        deadline.received += len(chunk)
                        if deadline.left() < 0:
                            raise self._too_slow(remote, deadline)
                        if have > limit:
                            sink.close()
                            _discard(partial)
                            raise SizeMismatchError(
                                f"{remote.name}: GET {url} sent more than the expected {limit} bytes"
                            )
                        sink.write(chunk)
                        if hasher is not None:
                            hasher.update(chunk)
                except httpx.TransportError as exc:
                    raise _Retry(f"GET {url} broke off after {have} bytes: {exc}") from exc
        return _Received(sha256=hasher.hexdigest() if hasher else None, etag=strong_etag or None)

    def _check_stop(self, remote: RemoteFile) -> None:
        if self.should_stop is not None and self.should_stop():
            raise DownloadStopped(f"{remote.name}: the job stopped")

    def _verify(self, remote: RemoteFile, partial: Path, key: tuple[str, str]) -> None:
        size = partial.stat().st_size
        if remote.size is not None and size != remote.size:
            _discard(partial)
            raise SizeMismatchError(f"{remote.name}: got {size} bytes, expected {remote.size}")
        hasher = _hasher(remote)
        _feed(hasher, partial)
        algorithm, expected = key
        actual = hasher.hexdigest()
        if actual != expected:
            _discard(partial)
            raise ChecksumMismatchError(
                f"{remote.name}: {algorithm} mismatch: expected {expected}, got {actual} ({remote.url})"
            )

    def fetch_into(self, remotes: list[RemoteFile], destination: Path) -> list[Path]:
        """Fetch every file (at most `download_concurrency` at once) and place each at `destination/<name>`.
        All files are attempted; if any failed, SourceError lists every failure."""
        with ThreadPoolExecutor(max_workers=self.settings.download_concurrency) as pool:
            futures = [pool.submit(self._fetch_and_place, remote, destination) for remote in remotes]
        placed, failures = [], []
        for future in futures:
            try:
                placed.append(future.result())
            except SourceError as exc:
                failures.append(str(exc))
        if failures:
            raise SourceError(f"{len(failures)} of {len(remotes)} files failed: " + "; ".join(failures))
        return placed

    def _fetch_and_place(self, remote: RemoteFile, destination: Path) -> Path:
        content = self.fetch(remote)
        target = destination / remote.name
        if target.exists() and target.stat().st_size == content.stat().st_size:
            with contextlib.suppress(OSError):
                if target.samefile(content):
                    return target
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            try:
                os.link(content, temporary)
            except OSError:
                shutil.copyfile(content, temporary)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        return target


def _read_index(path: Path) -> dict[str, str]:
    """ETag -> sha256 of the versions of one (url, size) seen so far, oldest first; {} if none or unreadable
    (the index only saves downloads: losing it costs one download, never a wrong file)."""
    try:
        versions = json.loads(path.read_text()).get("versions", {})
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(versions, dict):
        return {}
    return {
        etag: digest
        for etag, digest in versions.items()
        if isinstance(etag, str) and isinstance(digest, str) and len(digest) == 64
    }


def _write_index(path: Path, url: str, size: int | None, versions: dict[str, str]) -> None:
    kept = dict(list(versions.items())[-INDEX_VERSIONS:])
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(json.dumps({"url": url, "size": size, "versions": kept}))
    os.replace(temporary, path)
