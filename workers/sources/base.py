"""What every adapter hands the downloader: the files of one source, each with what is known to verify it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath


class SourceError(Exception):
    """A source that cannot be resolved or fetched; the message says which file and why."""


class CredentialsMissingError(SourceError):
    """The host needs the operator's own account and this server has none configured: `setting` names the
    environment variable(s) to set, so the job page can say exactly that."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


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


@dataclass(frozen=True)
class RemoteFile:
    """One file of a source. `name` is its relative path inside the source (where it lands in the job folder);
    exactly one of `url` (fetched over HTTP) and `path` (a local file, linked or copied) is set.

    Checksums: `sha256` and `md5` are of the content; `git_sha1` is a git blob id (what the Hugging Face Hub
    gives for files not stored in LFS)."""

    name: str
    url: str | None = None
    path: Path | None = None
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    git_sha1: str | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.path is None):
            raise ValueError("a RemoteFile has exactly one of url and path")
        relative = PurePosixPath(self.name)
        if not self.name or relative.is_absolute() or ".." in relative.parts:
            raise SourceError(f"file name {self.name!r} must be a relative path without `..`")
        for algorithm, length in (("sha256", 64), ("md5", 32), ("git_sha1", 40)):
            value = getattr(self, algorithm)
            if value is not None and (
                len(value) != length or any(c not in "0123456789abcdef" for c in value)
            ):
                raise SourceError(f"{self.name}: {algorithm} {value!r} is not {length} lowercase hex digits")

    @property
    def cache_key(self) -> tuple[str, str] | None:
        """(algorithm, digest) naming the content in the cache; None when no checksum is known."""
        for algorithm in ("sha256", "md5", "git_sha1"):
            value = getattr(self, algorithm)
            if value:
                return algorithm, value
        return None


def included(name: str, include: Sequence[str]) -> bool:
    """Whether a file passes a descriptor's `include` globs (no globs: every file does)."""
    return not include or any(fnmatch(name, pattern) for pattern in include)


def chosen(files: list[RemoteFile], include: Sequence[str], what: str) -> list[RemoteFile]:
    """The files an adapter resolved, in name order; an error naming the source when none is left."""
    if not files:
        raise SourceError(f"{what}: no files" + (f" match include={list(include)}" if include else ""))
    return sorted(files, key=lambda f: f.name)
