"""Plain NIfTI-1 `.nii.gz` volumes read straight from their gzip stream.

Most 3D volumes in public sets are the simplest NIfTI there is: one gzip member holding a 352-byte header and
the voxels, unscaled, little-endian. For those the voxels can be inflated straight into the array (or, when
the file is already in the bundle's form, not kept at all: workers/imaging/passthrough.py), instead of
inflating to a temporary `.nii` that ITK then reads and copies again. The geometry is still ITK's own reading
of the header (ITK reads the header alone), so both ways see one grid; anything less plain goes to ITK whole.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from isal import igzip, igzip_lib
from nibabel.spatialimages import HeaderDataError

NIFTI1_VOXEL_OFFSET = 352  # 348 header bytes + the 4-byte extension flag: no extensions
CHUNK_BYTES = 1 << 16  # 64 KiB in, ~150 KiB out: measured 10% faster than 1 MiB (allocations stay small)
# What ITK's NIfTI reader gives for each stored type, so "same dtype" means what the ITK way would give.
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
_UNITS_UNKNOWN, _UNITS_MM = 0, 2
# The error isal raises on a corrupt stream (isal_zlib.error is the same class). isal's stubs declare it as an
# instance (`IsalError: Exception`), which an except clause refuses: it is the class.
IsalError: type[Exception] = igzip_lib.IsalError  # type: ignore[assignment]


@dataclass(frozen=True)
class PlainNifti:
    """A plain `.nii.gz` (see plain_nifti) with its geometry as ITK reads it."""

    path: Path
    header: nib.Nifti1Header
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


def plain_nifti(path: Path) -> PlainNifti | None:
    """`path` if it is a gzipped single-file NIfTI-1, little-endian, 3D, one component, no extensions, no
    intensity scaling, in millimetres (or no unit), of a type ITK keeps as stored; else None.

    Remembered per file version (path, inode, size, modification time): one case asks up to three times (the
    copy way, the decoding way, the general reader), and each answer costs a gzip open and an ITK header read."""
    if not path.name.lower().endswith(".nii.gz") or not path.is_file():
        return None
    status = path.stat()
    return _plain_nifti(path, status.st_ino, status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _plain_nifti(path: Path, _inode: int, _size: int, _mtime_ns: int) -> PlainNifti | None:
    try:
        with igzip.open(path, "rb") as stream:
            head = stream.read(NIFTI1_VOXEL_OFFSET)
        header = nib.Nifti1Header.from_fileobj(BytesIO(head), check=False)
    except (OSError, EOFError, ValueError, IsalError, HeaderDataError):
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
    reader = _itk_header(head)
    if reader is None:
        return None
    dtype = _ITK_DTYPES.get(reader.GetPixelID())
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1 or dtype is None:
        return None
    if np.dtype(dtype).newbyteorder("<") != header.get_data_dtype().newbyteorder("<"):
        return None
    return PlainNifti(
        path=path,
        header=header,
        size=tuple(reader.GetSize()),
        spacing=tuple(reader.GetSpacing()),
        origin=tuple(reader.GetOrigin()),
        direction=tuple(reader.GetDirection()),
        dtype=np.dtype(dtype).newbyteorder("<"),
    )


def _itk_header(head: bytes) -> sitk.ImageFileReader | None:
    """ITK's reading of the header alone (it does not need the voxels for that)."""
    with tempfile.NamedTemporaryFile(suffix=".nii", prefix="imagingx-header-") as plain:
        plain.write(head)
        plain.flush()
        reader = sitk.ImageFileReader()
        reader.SetFileName(plain.name)
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return None
    return reader


@dataclass(frozen=True)
class Inflated:
    complete: bool  # the gzip member ended properly (its CRC and length checked)
    trailing: bool  # bytes follow the member in the file
    voxel_bytes: int  # inflated bytes after the header (after `header_bytes`)


class CorruptStreamError(Exception):
    pass


def inflate(
    path: Path,
    take_voxels: Callable[[memoryview], object],
    take_compressed: Callable[[bytes], None] | None = None,
    stop_at_end: bool = True,
    header_bytes: int = NIFTI1_VOXEL_OFFSET,
) -> Inflated:
    """Inflate `path`'s gzip member 64 KiB at a time, handing the bytes after the first `header_bytes` (the
    voxels of a plain NIfTI) to `take_voxels` and, if given, the file's bytes to `take_compressed`. Raises CorruptStreamError for data
    that is not deflate. With `stop_at_end`, reading stops where the member ends (what follows is not part of
    the volume); otherwise the rest is still read and handed on, and reported as `trailing`."""
    # ISA-L's own streaming inflater, in 64 KiB reads: 0.20 s per 105 MB CT against 0.22-0.23 s for its
    # zlib-compatible decompressobj (bench/fusion/README.md), and it checks the gzip header, CRC32 and length
    # just the same
    decompressor = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
    skip, voxels, trailing = header_bytes, 0, False
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            if take_compressed is not None:
                take_compressed(chunk)
            if decompressor.eof:
                trailing = True
                continue
            try:
                data = memoryview(decompressor.decompress(chunk))
            except IsalError as error:
                raise CorruptStreamError(str(error)) from error
            if skip:
                dropped = min(skip, len(data))
                data, skip = data[dropped:], skip - dropped
            if data:
                voxels += len(data)
                take_voxels(data)
            if decompressor.eof:
                trailing = trailing or bool(decompressor.unused_data)
                if stop_at_end:
                    break
    return Inflated(complete=decompressor.eof, trailing=trailing, voxel_bytes=voxels)


def read_voxels(
    volume: PlainNifti, take_compressed: Callable[[bytes], None] | None = None
) -> tuple[np.ndarray, Inflated]:
    """The voxels as a (z, y, x) array, inflated straight into it; fewer bytes than the header promises
    leave `Inflated.voxel_bytes` short (the caller reports the file as truncated), more are ignored.
    `take_compressed` is handed every byte of the file, to the end (e.g. to hash it in the same read)."""
    array = np.empty(volume.shape, dtype=volume.dtype)
    target = array.data.cast("B")
    filled = 0

    def take(data: memoryview) -> None:
        nonlocal filled
        room = min(len(data), len(target) - filled)
        target[filled : filled + room] = data[:room]
        filled += room

    return array, inflate(volume.path, take, take_compressed, stop_at_end=take_compressed is None)


def image_from_voxels(volume: PlainNifti, array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction)
    return image
