"""What every adapter hands the downloader: the files of one source, each with what is known to verify it."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Literal, TypedDict
from urllib.parse import urlsplit

# The errors every adapter raises are defined beside the descriptors (which raise them too, on the web side);
# adapters take them from here with the rest of their vocabulary.
from app.common.descriptors import CredentialsMissingError, SourceError


@dataclass(frozen=True)
class FetchOptions:
    """What a bundle request asks of every source, for adapters that can take less than everything.

    `max_subjects`: at most this many subjects (patients) per dataset, a deterministic sample (hash of the
    subject id with `seed`), so the same request fetches the same subjects. `labelled_only`: only the image
    series that the source's label objects (DICOM SEG / RTSTRUCT) refer to, plus those label objects."""

    max_subjects: int | None = None
    labelled_only: bool = False
    seed: str = "imagingx"


NO_OPTIONS = FetchOptions()


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of a URL, lower case, the default port left out: what a credential is bound to."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


@dataclass(frozen=True, repr=False)
class Credential:
    """Request headers that authenticate the operator's account to one origin (`scheme://host[:port]`).

    net.open_response sends them only to that origin, only over https (or to a loopback address, in tests),
    and never again once a redirect has left the origin: a presigned storage URL on another host gets nothing.
    The headers are never printed: repr names the origin only, and no error message includes them."""

    origin: str
    headers: tuple[tuple[str, str], ...]

    def __repr__(self) -> str:
        return f"Credential(origin={self.origin!r}, headers=<hidden>)"

    @classmethod
    def basic(cls, url: str, username: str, password: str) -> Credential:
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        return cls(origin_of(url), (("Authorization", f"Basic {token}"),))

    @classmethod
    def bearer(cls, url: str, token: str) -> Credential:
        return cls(origin_of(url), (("Authorization", f"Bearer {token}"),))

    def applies_to(self, url: str) -> bool:
        return origin_of(url) == self.origin


@dataclass(frozen=True)
class RemoteFile:
    """One file of a source. `name` is its relative path inside the source (where it lands in the job folder);
    exactly one of `url` (fetched over HTTP) and `path` (a local file, linked or copied) is set.

    Checksums: `sha256`, `sha512`, `sha1` and `md5` are of the content; `git_sha1` is a git blob id (what the
    Hugging Face Hub gives for files not stored in LFS, and OpenNeuro for files kept in git).

    `no_checksum`: the host publishes no checksum for this file (a Kaggle archive). The downloader then takes it
    only over https, checks its size when known, and caches it under the sha256 it computes; `verification`
    says "size only" (or "none" when no size is stated either), so a report can say how each file was
    verified.

    `credential`: the operator's account on the host, sent with the download (and only to that host)."""

    name: str
    url: str | None = None
    path: Path | None = None
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    git_sha1: str | None = None
    sha512: str | None = None
    sha1: str | None = None
    no_checksum: bool = False
    credential: Credential | None = field(default=None, repr=False, compare=False)
    # what the host states about the record the file belongs to (e.g. a Zenodo record's licence and DOI), and
    # who states it ("Zenodo record 4242"): carried into the bundle's LICENSES.md and CITATION.bib, never part
    # of the file's identity
    stated_licence: str = field(default="", compare=False)
    stated_doi: str = field(default="", compare=False)
    stated_by: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if (self.url is None) == (self.path is None):
            raise ValueError("a RemoteFile has exactly one of url and path")
        relative = PurePosixPath(self.name)
        if not self.name or relative.is_absolute() or ".." in relative.parts:
            raise SourceError(f"file name {self.name!r} must be a relative path without `..`")
        for algorithm, length in CHECKSUM_LENGTHS.items():
            value = getattr(self, algorithm)
            if value is not None and (
                len(value) != length or any(c not in "0123456789abcdef" for c in value)
            ):
                raise SourceError(f"{self.name}: {algorithm} {value!r} is not {length} lowercase hex digits")
        if self.no_checksum and self.cache_key is not None:
            raise ValueError("a RemoteFile marked no_checksum carries no checksum")

    @property
    def cache_key(self) -> tuple[str, str] | None:
        """(algorithm, digest) naming the content in the cache; None when no checksum is known."""
        for algorithm in CHECKSUM_LENGTHS:
            value = getattr(self, algorithm)
            if value:
                return algorithm, value
        return None

    @property
    def verification(self) -> str:
        """How the downloaded content is checked, for reports: the checksum's algorithm, "size only" (no
        checksum published, the size stated), or "none" (neither: only the transfer's own length framing)."""
        if self.path is not None:
            return "local copy"
        key = self.cache_key
        if key is not None:
            return "git blob id" if key[0] == "git_sha1" else key[0]
        return "size only" if self.size is not None else "none"


ChecksumAlgorithm = Literal["sha256", "sha512", "sha1", "md5", "git_sha1"]

# the checksums a RemoteFile can carry, in the order that picks its cache key, with their hex lengths
CHECKSUM_LENGTHS: dict[ChecksumAlgorithm, int] = {
    "sha256": 64,
    "sha512": 128,
    "sha1": 40,
    "md5": 32,
    "git_sha1": 40,
}


class Checksum(TypedDict, total=False):
    """RemoteFile's checksum fields as keyword arguments: `RemoteFile(..., **checksum(algorithm, digest))`."""

    sha256: str
    sha512: str
    sha1: str
    md5: str
    git_sha1: str


def checksum(algorithm: ChecksumAlgorithm, digest: str) -> Checksum:
    """The keyword argument for a checksum whose algorithm the host names (a Dataverse file, an annex key)."""
    given: Checksum = {}
    given[algorithm] = digest
    return given


def included(name: str, include: Sequence[str]) -> bool:
    """Whether a file passes a descriptor's `include` globs (no globs: every file does)."""
    return not include or any(fnmatch(name, pattern) for pattern in include)


def chosen(files: list[RemoteFile], include: Sequence[str], what: str) -> list[RemoteFile]:
    """The files an adapter resolved, in name order; an error naming the source when none is left."""
    if not files:
        raise SourceError(f"{what}: no files" + (f" match include={list(include)}" if include else ""))
    return sorted(files, key=lambda f: f.name)


__all__ = [
    "CHECKSUM_LENGTHS",
    "NO_OPTIONS",
    "Checksum",
    "ChecksumAlgorithm",
    "Credential",
    "CredentialsMissingError",
    "FetchOptions",
    "RemoteFile",
    "SourceError",
    "checksum",
    "chosen",
    "included",
    "origin_of",
]
