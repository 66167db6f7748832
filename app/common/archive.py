"""One deterministic tar of a published bundle, computed from the bundle folder whenever it is read.

Same bundle -> same archive bytes (sorted members, zeroed owners and times, fixed modes), so the archive's
checksum is as stable as the bundle's SHA256SUMS and any byte range of it can be served at any time: an
interrupted download resumes with `Range`. The archive is never stored: a stored copy would double every
bundle on disk and cost a second write of all its bytes. Not compressed: the volumes inside are gzip already
and PNG/Parquet compress themselves.

The bytes are exactly what `tarfile.open(path, "w", format=PAX_FORMAT)` writes for the same members (headers
come from `TarInfo.tobuf`; tests/test_packaging.py compares the two), so any tar reader accepts them.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from app.common.checksums import bundle_files

_CHUNK = 1 << 20


@dataclass(frozen=True)
class _Part:
    """A run of archive bytes: literal header/padding bytes, or `size` bytes of the file at `path`."""

    size: int
    data: bytes = b""
    path: Path | None = None


def _literal(data: bytes) -> _Part:
    return _Part(size=len(data), data=data)


def _header(name: str, directory: bool, size: int = 0) -> _Part:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = size
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return _literal(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))


class BundleArchive:
    """The tar of `bundle/` (members under the folder's name), as a sequence of byte runs."""

    def __init__(self, bundle: Path) -> None:
        bundle = Path(bundle)
        parts = [_header(bundle.name, directory=True)]
        directories: set[str] = set()
        for relative in bundle_files(bundle):
            folders = relative.split("/")[:-1]
            for depth in range(1, len(folders) + 1):
                folder = "/".join(folders[:depth])
                if folder not in directories:
                    directories.add(folder)
                    parts.append(_header(f"{bundle.name}/{folder}", directory=True))
            path = bundle / relative
            size = os.stat(path).st_size
            parts.append(_header(f"{bundle.name}/{relative}", directory=False, size=size))
            parts.append(_Part(size=size, path=path))
            if size % tarfile.BLOCKSIZE:
                parts.append(_literal(tarfile.NUL * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE)))
        # the end: two zero blocks, then zeros up to a whole record, as tarfile.close() writes them
        end = sum(part.size for part in parts) + 2 * tarfile.BLOCKSIZE
        parts.append(_literal(tarfile.NUL * (2 * tarfile.BLOCKSIZE + (-end % tarfile.RECORDSIZE))))
        self.parts = parts
        self.size = sum(part.size for part in parts)

    def read(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes from `start` up to (not including) `end`, in chunks of at most 1 MiB."""
        end = self.size if end is None else min(end, self.size)
        offset = 0
        for part in self.parts:
            if offset >= end:
                return
            low, high = max(start - offset, 0), min(end - offset, part.size)
            if low < high:
                if part.path is None:
                    yield part.data[low:high]
                else:
                    yield from _file_range(part.path, low, high)
            offset += part.size

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.read():
            digest.update(chunk)
        return digest.hexdigest()


def _file_range(path: Path, low: int, high: int) -> Iterator[bytes]:
    with path.open("rb") as source:
        source.seek(low)
        left = high - low
        while left > 0:
            chunk = source.read(min(_CHUNK, left))
            if not chunk:
                raise OSError(f"{path.name} is shorter than when the archive was planned")
            left -= len(chunk)
            yield chunk
