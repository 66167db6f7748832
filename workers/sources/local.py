"""`local` sources: a copy the user already has (registration-only data), read only from the folders the
operator lists in `local_source_roots`, so a catalog entry cannot make a worker read /etc or another job.
Symlinks are followed only when they stay inside those roots. Files are hard-linked into the job folder when on
the same file system, copied otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from app.common.descriptors import LocalSource
from app.core.config import Settings
from workers.sources.base import NO_OPTIONS, FetchOptions, RemoteFile, SourceError


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def resolve(
    source: LocalSource,
    settings: Settings,
    client: httpx.Client | None = None,
    options: FetchOptions = NO_OPTIONS,
) -> list[RemoteFile]:
    roots = [Path(root).resolve() for root in settings.local_source_roots]
    if not roots:
        raise SourceError(
            f"local source {source.path}: local sources are disabled (set IMAGINGX_LOCAL_SOURCE_ROOTS)"
        )
    top = Path(source.path).resolve()
    if not _inside(top, roots):
        raise SourceError(
            f"local source {source.path} is outside the allowed roots ({', '.join(map(str, roots))})"
        )
    if top.is_file():
        return [RemoteFile(name=top.name, path=top, size=top.stat().st_size)]
    if not top.is_dir():
        raise SourceError(f"local source {source.path} does not exist")
    remote_files = []
    for folder, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            real = path.resolve()
            if not _inside(real, roots):
                raise SourceError(f"local source {source.path}: {path} links outside the allowed roots")
            if not real.is_file():
                continue
            remote_files.append(
                RemoteFile(name=path.relative_to(top).as_posix(), path=real, size=real.stat().st_size)
            )
    if not remote_files:
        raise SourceError(f"local source {source.path} holds no files")
    return remote_files
