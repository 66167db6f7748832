"""One deterministic tar of a published bundle: sorted members, zeroed owners and times, fixed modes.

Same bundle -> same archive bytes, so the archive's checksum is as stable as the bundle's SHA256SUMS. Not
compressed: the volumes inside are gzip already and PNG/Parquet compress themselves.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from workers.packaging.checksums import bundle_files


def _normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def write_bundle_tar(bundle: Path, dest: Path) -> Path:
    """Write `dest` (atomically: temp name then rename) holding `bundle/` under its folder name."""
    bundle, dest = Path(bundle), Path(dest)
    temporary = dest.with_name(dest.name + ".partial")
    with tarfile.open(temporary, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(bundle, arcname=bundle.name, recursive=False, filter=_normalised)
        directories: set[str] = set()
        for relative in bundle_files(bundle):
            parts = relative.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                folder = "/".join(parts[:depth])
                if folder not in directories:
                    directories.add(folder)
                    tar.add(
                        bundle / folder,
                        arcname=f"{bundle.name}/{folder}",
                        recursive=False,
                        filter=_normalised,
                    )
            tar.add(bundle / relative, arcname=f"{bundle.name}/{relative}", filter=_normalised)
    os.replace(temporary, dest)
    return dest
