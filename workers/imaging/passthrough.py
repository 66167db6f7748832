"""Cases already stored the way the bundle stores them are copied, not decoded and re-encoded.

Re-encoding costs most of a case's time: a 512x512x200 CT is inflated (~0.2 CPU-s) and deflated again
(~0.3 CPU-s with ISA-L) only to come out with the same voxels. Many sources already ship what the bundle
needs: a NIfTI-1 `.nii.gz` in RAS, unscaled, with a label map that uses the bundle's ids. For such a case the
harmonise unit inflates each file once, to check it (gzip CRC, exact voxel length) and to compute the content
hash for deduplication, and writes the compressed bytes it read straight into the job folder.

Only what would come out of `harmonise_case` + `prewrite_volumes` unchanged is copied: the same voxels, dtype
and geometry as ITK reads them. The file keeps the source's header (and so its byte-level form), which is why
every condition below is checked against ITK's own reading of that header. Anything else, including every
malformed file, goes the decoding way, which also reports precisely what is wrong with it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from isal import igzip, isal_zlib

from workers.imaging.dedup import content_digest
from workers.imaging.orientation import direction_codes

NIFTI1_VOXEL_OFFSET = 352  # 348 header bytes + the 4-byte extension flag: no extensions
CHUNK_BYTES = 1 << 20
# What ITK's NIfTI reader gives for each stored type, so "same dtype" means the same as the decoding way.
_ITK_DTYPES = {
    sitk.sitkUInt8: np.uint8,
    sitk.sitkInt8: np.int8,
    sitk.sitkUInt16: np.uint16,
    sitk.sitkInt16: np.int16,
    sitk.sitkUInt32: np.uint32,
    sitk.sitkInt32: np.int32,
    sitk.sitkUInt64: np.uint64,
    sitk.sitkInt64: np.int64,
    sitk.sitkFloat32: np.float32,
    sitk.sitkFloat64: np.float64,
}
# Header affines are float32: agreement to a micrometre means ITK and any other reader see the same grid.
AFFINE_TOLERANCE_MM = 1e-3
_UNITS_UNKNOWN, _UNITS_MM = 0, 2


@dataclass(frozen=True)
class StoredVolume:
    """A `.nii.gz` whose bytes can go into the bundle as they are, with its geometry as ITK reads it."""

    path: Path
    size: tuple[int, ...]  # ITK (x, y, z)
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    dtype: np.dtype  # little-endian

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy's (z, y, x), the order of the voxel bytes."""
        return tuple(reversed(self.size))

    @property
    def voxel_bytes(self) -> int:
        return int(np.prod(self.size)) * self.dtype.itemsize

    def same_grid(self, other: StoredVolume) -> bool:
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, rtol=0, atol=1e-5)
            and np.allclose(self.origin, other.origin, rtol=0, atol=AFFINE_TOLERANCE_MM)
            and np.allclose(self.direction, other.direction, rtol=0, atol=1e-6)
        )


@dataclass(frozen=True)
class CopiedVolume:
    """A stored volume copied into place after one checked pass over it."""

    path: Path
    size: int
    sha256: str  # of the file: the same bytes as the source file
    content_hash: str  # workers.imaging.dedup.content_hash of an image's voxels ("" for a label)
    value_range: tuple[float, float] | None  # a label's smallest and largest value (None for an image)


def stored_volume(path: Path) -> StoredVolume | None:
    """`path` if its bytes are already what the bundle would write for it, else None (the caller decodes it).

    That is: a gzipped single-file NIfTI-1, little-endian, 3D, one component, no extensions, no intensity
    scaling, millimetres, voxel axes toward R, A, S as ITK reads them, and qform/sform agreeing with ITK's
    geometry (a reader preferring the other transform must see the same grid)."""
    if not path.name.lower().endswith(".nii.gz") or not path.is_file():
        return None
    try:
        with igzip.open(path, "rb") as stream:
            head = stream.read(NIFTI1_VOXEL_OFFSET)
        header = nib.Nifti1Header.from_fileobj(BytesIO(head), check=False)
    except (OSError, EOFError, ValueError, isal_zlib.error, nib.spatialimages.HeaderDataError):
        return None
    if (
        len(head) < NIFTI1_VOXEL_OFFSET
        or head[344:348] != b"n+1\x00"
        or head[348:352] != b"\x00\x00\x00\x00"
        or header.endianness != "<"
        or int(header["dim"][0]) != 3
        or float(header["vox_offset"]) != NIFTI1_VOXEL_OFFSET
        or float(header["scl_slope"]) not in (0.0, 1.0)
        or float(header["scl_inter"]) != 0.0
        or int(header["xyzt_units"]) & 0x07 not in (_UNITS_UNKNOWN, _UNITS_MM)
    ):
        return None
    itk = _itk_information(head)
    if itk is None:
        return None
    size, spacing, origin, direction, dtype = itk
    if dtype != header.get_data_dtype().newbyteorder("<") or direction_codes(direction) != "RAS":
        return None
    volume = StoredVolume(path, size, spacing, origin, direction, dtype)
    return volume if _header_forms_agree(header, volume) else None


def _itk_information(head: bytes) -> tuple[tuple[int, ...], tuple[float, ...], ...] | None:
    """Size, spacing, origin, direction and dtype as SimpleITK reads this header (not re-derived here: the
    decoding way reads the file with ITK, and both ways must see one geometry)."""
    with tempfile.NamedTemporaryFile(suffix=".nii", prefix="imagingx-header-") as plain:
        plain.write(head)
        plain.flush()
        reader = sitk.ImageFileReader()
        reader.SetFileName(plain.name)
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return None
    dtype = _ITK_DTYPES.get(reader.GetPixelID())
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1 or dtype is None:
        return None
    return (
        tuple(reader.GetSize()),
        tuple(reader.GetSpacing()),
        tuple(reader.GetOrigin()),
        tuple(reader.GetDirection()),
        np.dtype(dtype).newbyteorder("<"),
    )


def _header_forms_agree(header: nib.Nifti1Header, volume: StoredVolume) -> bool:
    from workers.packaging.nifti_gz import itk_geometry_to_affine

    expected = itk_geometry_to_affine(volume.spacing, volume.origin, volume.direction)
    forms = [
        form
        for form, code in (header.get_qform(coded=True), header.get_sform(coded=True))
        if form is not None and code
    ]
    if not forms:
        return False  # no transform at all: ITK falls back to ANALYZE conventions
    return all(np.allclose(form, expected, rtol=0, atol=AFFINE_TOLERANCE_MM) for form in forms)


def copy_checked(volume: StoredVolume, target: Path, label: bool = False) -> CopiedVolume | None:
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
            os.unlink(temporary)
            try:
                os.link(volume.path, temporary)
            except OSError:  # another file system
                shutil.copyfile(volume.path, temporary)
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
    volume: StoredVolume, sink: BinaryIO | None, label: bool
) -> tuple[int, str, str, tuple[float, float] | None] | None:
    file_digest = hashlib.sha256()
    voxel_digest = None if label else content_digest(volume.dtype, volume.shape, volume.spacing)
    decompressor = isal_zlib.decompressobj(wbits=16 + isal_zlib.MAX_WBITS)
    skip, voxels, size = NIFTI1_VOXEL_OFFSET, 0, 0
    itemsize = volume.dtype.itemsize
    carry = b""  # the start of a voxel split across two inflated chunks
    low = high = None
    with volume.path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            if decompressor.eof:
                return None  # bytes after the gzip member: not a plain single-member file
            try:
                data = memoryview(decompressor.decompress(chunk))
            except isal_zlib.error:
                return None
            if decompressor.unused_data:
                return None
            if sink is not None:
                sink.write(chunk)
            file_digest.update(chunk)
            size += len(chunk)
            if skip:
                dropped = min(skip, len(data))
                data, skip = data[dropped:], skip - dropped
            voxels += len(data)
            if voxel_digest is not None:
                voxel_digest.update(data)
            elif data:
                if carry:
                    data = memoryview(carry + bytes(data))
                usable = len(data) - len(data) % itemsize
                carry = bytes(data[usable:])
                if usable:
                    values = np.frombuffer(data[:usable], dtype=volume.dtype)
                    low = values.min() if low is None else min(low, values.min())
                    high = values.max() if high is None else max(high, values.max())
    if not decompressor.eof or voxels != volume.voxel_bytes:
        return None
    found = (low.item(), high.item()) if low is not None and high is not None else None
    content = voxel_digest.hexdigest() if voxel_digest is not None else ""
    return size, file_digest.hexdigest(), content, found


def identity_labels(local_to_global: Mapping[int, int], largest: int) -> bool:
    """Whether every value a label map of `largest` at most can hold keeps its id in the bundle."""
    return largest >= 0 and all(local_to_global.get(value) == value for value in range(largest + 1))
