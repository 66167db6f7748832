"""Cases already stored the way the bundle stores them are copied, not decoded and re-encoded.

Re-encoding costs most of a case's time: a 512x512x200 CT is inflated (~0.2 CPU-s) and deflated again
(~0.3 CPU-s with ISA-L) only to come out with the same voxels. Many sources already ship what the bundle
needs: a NIfTI-1 `.nii.gz` in RAS, unscaled, with a label map that uses the bundle's ids. For such a case the
harmonise unit inflates each file once, to check it (gzip CRC, exact voxel length) and to compute the content
hash for deduplication, then hard-links the file into the job folder (or copies it while reading, when its
owner may still change it: see copy_checked).

Only what would come out of `harmonise_case` + `prewrite_volumes` unchanged is copied: the same voxels, dtype
and geometry as ITK reads them. The file keeps the source's header (and so its byte-level form), which is why
every condition below is checked against ITK's own reading of that header. Anything else, including every
malformed file, goes the decoding way, which also reports precisely what is wrong with it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import nibabel as nib
import numpy as np

from workers.imaging.dedup import content_digest
from workers.imaging.nifti import CorruptStreamError, PlainNifti, inflate, plain_nifti
from workers.imaging.orientation import direction_codes, itk_geometry_to_affine
from workers.packaging.volumes import place_file

# Header affines are float32: agreement to a micrometre means ITK and any other reader see the same grid.
AFFINE_TOLERANCE_MM = 1e-3


def same_grid(one: PlainNifti, other: PlainNifti) -> bool:
    """Exactly the same grid as ITK reads the two headers. Copied files keep their own headers, and the
    decoding way writes a label with its image's geometry; nnU-Net compares the two with np.allclose's
    default tolerances (an origin of 0 vs 0.0005 mm fails), so anything short of equal is decoded."""
    return (one.size, one.spacing, one.origin, one.direction) == (
        other.size,
        other.spacing,
        other.origin,
        other.direction,
    )


@dataclass(frozen=True)
class CopiedVolume:
    """A stored volume copied into place after one checked pass over it."""

    path: Path
    size: int
    sha256: str  # of the file: the same bytes as the source file
    content_hash: str  # workers.imaging.dedup.content_hash of an image's voxels ("" for a label)
    value_range: tuple[float, float] | None  # a label's smallest and largest value (None for an image)


def stored_volume(path: Path) -> PlainNifti | None:
    """`path` if its bytes are already what the bundle would write for it, else None (the caller decodes it):
    a plain NIfTI (workers/imaging/nifti.py) whose voxel axes point toward R, A, S as ITK reads them, and
    whose qform/sform agree with ITK's geometry (a reader preferring the other transform sees the same grid)."""
    volume = plain_nifti(path)
    if volume is None or direction_codes(volume.direction) != "RAS":
        return None
    return volume if _header_forms_agree(volume.header, volume) else None


def _header_forms_agree(header: nib.Nifti1Header, volume: PlainNifti) -> bool:
    expected = itk_geometry_to_affine(volume.spacing, volume.origin, volume.direction)
    forms = [
        form
        for form, code in (header.get_qform(coded=True), header.get_sform(coded=True))
        if form is not None and code
    ]
    if not forms:
        return False  # no transform at all: ITK falls back to ANALYZE conventions
    return all(np.allclose(form, expected, rtol=0, atol=AFFINE_TOLERANCE_MM) for form in forms)


def copy_checked(volume: PlainNifti, target: Path, label: bool = False) -> CopiedVolume | None:
    """Inflate `volume` once, checking the gzip stream and that it holds exactly the voxels its header
    promises, while hashing its file bytes (sha256); then put those bytes at `target` (temporary name,
    rename). An image's voxels are hashed too (content hash); a `label`'s smallest and largest value are
    found instead. None, with nothing left at `target`, if the file is not exactly as stored_volume() saw it.

    A file nobody else can change is hard-linked (no bytes move): one the download cache made read-only, or
    one only this job holds (unpacked from an archive). Anything else, such as a local source's file that
    its owner may still edit, is copied while it is read, so the copy is exactly what was checked."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}-", suffix=".tmp", dir=target.parent)
    try:
        if _unchangeable(volume.path):
            os.close(handle)
            scanned = _scan_into(volume, None, label)
            if scanned is None:
                return None
            place_file(volume.path, Path(temporary))  # a link, or a synced copy across file systems
        else:
            with os.fdopen(handle, "wb") as sink:
                scanned = _scan_into(volume, sink, label)
                if scanned is None:
                    return None
                sink.flush()
                os.fsync(sink.fileno())
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)
    size, sha256, content_hash, found_range = scanned
    return CopiedVolume(target, size, sha256, content_hash, found_range)


def _unchangeable(path: Path) -> bool:
    status = path.stat()
    return status.st_nlink == 1 or not status.st_mode & 0o222


def _scan_into(
    volume: PlainNifti, sink: BinaryIO | None, label: bool
) -> tuple[int, str, str, tuple[float, float] | None] | None:
    file_digest = hashlib.sha256()
    voxel_digest = None if label else content_digest(volume.dtype, volume.shape, volume.spacing)
    itemsize = volume.dtype.itemsize
    carry = b""  # the start of a voxel split across two inflated chunks
    low = high = None
    size = 0

    def take_compressed(chunk: bytes) -> None:
        nonlocal size
        if sink is not None:
            sink.write(chunk)
        file_digest.update(chunk)
        size += len(chunk)

    def take_voxels(data: memoryview) -> None:
        nonlocal carry, low, high
        if voxel_digest is not None:
            voxel_digest.update(data)
            return
        if carry:
            data = memoryview(carry + bytes(data))
        usable = len(data) - len(data) % itemsize
        carry = bytes(data[usable:])
        if usable:
            values = np.frombuffer(data[:usable], dtype=volume.dtype)
            low = values.min() if low is None else min(low, values.min())
            high = values.max() if high is None else max(high, values.max())

    try:
        inflated = inflate(volume.path, take_voxels, take_compressed, stop_at_end=False)
    except CorruptStreamError:
        return None
    if not inflated.complete or inflated.trailing or inflated.voxel_bytes != volume.voxel_bytes:
        return None
    found = (low.item(), high.item()) if low is not None and high is not None else None
    content = voxel_digest.hexdigest() if voxel_digest is not None else ""
    return size, file_digest.hexdigest(), content, found


def identity_labels(local_to_global: Mapping[int, int], largest: int) -> bool:
    """Whether every value a label map of `largest` at most can hold keeps its id in the bundle."""
    return largest >= 0 and all(local_to_global.get(value) == value for value in range(largest + 1))
