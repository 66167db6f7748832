"""Duplicate scans found by content, not by name.

Public sets reuse each other under new file names (CT-ORG holds 131 LiTS scans; MSD brain is BraTS renamed),
so the only reliable key is the voxels. Hashing *after* reorientation to RAS makes the same scan stored as LAS
NIfTI in one set and RAS in another hash alike. Spacing, shape and dtype go into the hash so two different
scans that happen to share raw bytes (an all-zero mask, a resampled copy) do not collide.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping
from typing import TypeVar

import numpy as np
import SimpleITK as sitk
from blake3 import blake3

# Spacing is read from text headers with varying precision; round so 0.488281 and 0.48828125 agree.
SPACING_DECIMALS = 4

K = TypeVar("K", bound=Hashable)


def content_hash(image: sitk.Image) -> str:
    """BLAKE3 of the canonical voxel array with its dtype, shape and spacing (call on the RAS image).

    BLAKE3, not sha256: every voxel of every case is hashed, and BLAKE3 is ~2.5x faster per core here (4.6 vs
    1.8 GB/s) while staying collision-resistant, so a crafted scan cannot pass for another source's case."""
    return array_content_hash(
        sitk.GetArrayViewFromImage(image), image.GetSpacing(), image.GetNumberOfComponentsPerPixel()
    )


def array_content_hash(array: np.ndarray, spacing: tuple[float, ...], components: int = 1) -> str:
    """content_hash of a canonical (RAS, ITK-ordered) voxel array with its spacing."""
    array = np.ascontiguousarray(array)
    array = array.astype(array.dtype.newbyteorder("<"), copy=False)  # one byte order on every platform
    digest = content_digest(array.dtype, array.shape, spacing, components)
    digest.update(array.data.cast("B"))
    return digest.hexdigest()


def content_digest(
    dtype: np.dtype, shape: tuple[int, ...], spacing: tuple[float, ...], components: int = 1
) -> blake3:
    """The content hash before its voxels: fed the little-endian, C-ordered voxel bytes, in one piece or in
    chunks as a stream is inflated, it gives `content_hash` (so a volume copied without decoding it into an
    image still deduplicates against one that was decoded)."""
    header = "|".join(
        (
            np.dtype(dtype).newbyteorder("<").str,
            "x".join(str(n) for n in shape),
            ",".join(f"{s:.{SPACING_DECIMALS}f}" for s in spacing),
            str(components),
        )
    )
    return blake3(header.encode())


def find_duplicates(hashes: Mapping[K, str]) -> list[list[K]]:
    """Groups of keys (e.g. (source, case id)) sharing one content hash, each group in the mapping's order;
    the first of a group is the one to keep."""
    groups: dict[str, list[K]] = defaultdict(list)
    for key, digest in hashes.items():
        groups[digest].append(key)
    return [keys for keys in groups.values() if len(keys) > 1]
