"""Publish a bundle folder only when complete: build in `<dest>.partial-<random>`, then one atomic rename.

A reader (or a resumed job) either sees the whole bundle or none of it; a crash leaves only a `.partial-*`
folder, which never has the bundle's name and is removed on failure (or by the next run, see
`remove_stale_partials`).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_MARKER = ".partial-"


class BundleExistsError(FileExistsError):
    """The destination is already published; bundles are immutable once their name exists."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def staged_folder(dest: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `dest` (same filesystem, so rename is atomic); rename it to `dest`
    when the block completes, delete it when the block raises."""
    dest = Path(dest)
    if dest.exists():
        raise BundleExistsError(f"{dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(f"{dest.name}{PARTIAL_MARKER}{secrets.token_hex(6)}")
    staging.mkdir()
    try:
        yield staging
        # Small files were written without fsync; make them durable before the name becomes visible.
        for root, _dirs, files in os.walk(staging):
            for name in files:
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            _fsync_dir(Path(root))
        os.rename(staging, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_stale_partials(dest: Path) -> list[Path]:
    """Remove staging folders a killed job left beside `dest` (a SIGKILL skips the cleanup above)."""
    dest = Path(dest)
    removed = []
    if dest.parent.is_dir():
        for candidate in sorted(dest.parent.glob(f"{dest.name}{PARTIAL_MARKER}*")):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed
