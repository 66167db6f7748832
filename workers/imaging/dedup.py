"""Duplicate scans found by content, not by name.

Public sets reuse each other under new file names (CT-ORG holds 131 LiTS scans; MSD brain is BraTS renamed),
so the only reliable key is the voxels. Hashing *after* reorientation to RAS makes the same scan stored as LAS
NIfTI in one set and RAS in another hash alike. Spacing, shape and dtype go into the hash so two different
scans that happen to share raw bytes (an all-zero mask, a resampled copy) do not collide.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Hashable, Mapping
from typing import TypeVar

import numpy as np
import SimpleITK as sitk

# Spacing is read from text headers with varying precision; round so 0.488281 and 0.48828125 agree.
SPACING_DECIMALS = 4

K = TypeVar("K", bound=Hashable)


def content_hash(image: sitk.Image) -> str:
    """sha256 of the canonical voxel array with its dtype, shape and spacing (call on the RAS image)."""
    array = np.ascontiguousarray(sitk.GetArrayViewFromImage(image))
    array = array.astype(array.dtype.newbyteorder("<"), copy=False)  # one byte order on every platform
    header = "|".join(
        (
            array.dtype.str,
            "x".join(str(n) for n in array.shape),
            ",".join(f"{s:.{SPACING_DECIMALS}f}" for s in image.GetSpacing()),
            str(image.GetNumberOfComponentsPerPixel()),
        )
    )
    digest = hashlib.sha256(header.encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def find_duplicates(hashes: Mapping[K, str]) -> list[list[K]]:
    """Groups of keys (e.g. (source, case id)) sharing one content hash, each group in the mapping's order;
    the first of a group is the one to keep."""
    groups: dict[str, list[K]] = defaultdict(list)
    for key, digest in hashes.items():
        groups[digest].append(key)
    return [keys for keys in groups.values() if len(keys) > 1]
