"""Array sets: images shipped as numpy arrays, one case per element (MedMNIST's `.npz` files).

MedMNIST publishes one `.npz` per dataset holding `train_images`, `train_labels`, `val_images`, `val_labels`,
`test_images` and `test_labels`. A case names its element with `Case.member` (`"train_images[12]"`) and its
`images[0]` is the file holding that array: the `.npz` itself, or the `.npy` unpacked from it. (An `.npz` is a
zip archive, and the fetch unit unpacks a source's archives, within its size and ratio limits: in a job the
arrays arrive as `train_images.npy` ... in a folder named after the source or the npz.)

Reading one element must not read the whole array: 100k cases of one array would each inflate it. A `.npy` is
memory-mapped (np.load's mmap_mode), so an element costs the pages it covers. Inside an `.npz` np.load
ignores mmap_mode: a member stored without compression (np.savez) is mapped at its offset in the zip; a
deflated one (np.savez_compressed) can only be inflated from its start, so it is inflated once per process and
kept (INFLATED_CACHE_SIZE arrays: a process reads the train, val and test arrays of one set in turn).
"""

from __future__ import annotations

import functools
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workers.imaging.errors import UnreadableItemError

if TYPE_CHECKING:
    import SimpleITK as sitk
    from _typeshed import SupportsRead

MEMBER = re.compile(r"^(?P<array>[A-Za-z0-9_.-]+)\[(?P<index>\d+)\]$")
INFLATED_CACHE_SIZE = 3
_MAPPED_CACHE_SIZE = 64  # open maps are cheap; this only bounds the file handles a process keeps
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # a zip member's local file header (PKWARE APPNOTE 4.3.7)


def member_name(array: str, index: int) -> str:
    return f"{array}[{index}]"


def parse_member(member: str) -> tuple[str, int]:
    """`"train_images[12]"` -> ("train_images", 12); ValueError for anything else."""
    match = MEMBER.match(member)
    if match is None:
        raise ValueError(f"{member!r} does not name an array element (`name[index]`)")
    return match["array"], int(match["index"])


@dataclass(frozen=True)
class ArrayHeader:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool = False


@dataclass(frozen=True)
class ArraySet:
    """The arrays of one `.npz`: read from the file itself, or from the folder its `.npy` files were
    unpacked into (`root` is then that folder)."""

    root: Path
    arrays: dict[str, ArrayHeader]

    @property
    def is_npz(self) -> bool:
        return self.root.is_file()

    @property
    def stem(self) -> str:
        name = self.root.name
        return name[: -len(".npz")] if name.lower().endswith(".npz") else name

    def file_of(self, array: str) -> Path:
        """The file a case of `array` names in `images[0]`."""
        return self.root if self.is_npz else self.root / f"{array}.npy"


def find_array_sets(root: Path) -> list[ArraySet]:
    """Every `.npz` under `root`, and every folder holding `.npy` files, with its arrays' headers (no data
    read). Hidden files and unreadable archives are passed over: they are not array sets."""
    found: list[ArraySet] = []
    npz_files = sorted(p for p in root.rglob("*.npz") if p.is_file() and not _hidden(p, root))
    for path in npz_files:
        try:
            found.append(ArraySet(path, npz_headers(path)))
        except (OSError, ValueError, zipfile.BadZipFile):
            continue
    npy_folders: dict[Path, list[Path]] = {}
    for path in sorted(root.rglob("*.npy")):
        if path.is_file() and not _hidden(path, root):
            npy_folders.setdefault(path.parent, []).append(path)
    for folder, files in sorted(npy_folders.items()):
        headers: dict[str, ArrayHeader] = {}
        for path in files:
            try:
                with path.open("rb") as handle:
                    headers[path.stem] = _read_header(handle, path.stem)
            except (OSError, ValueError):
                continue
        if headers:
            found.append(ArraySet(folder, headers))
    return found


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "__MACOSX")) for part in path.relative_to(root).parts)


def npz_headers(path: Path) -> dict[str, ArrayHeader]:
    """Name -> shape and dtype of every array in an `.npz`, from each member's `.npy` header alone."""
    headers: dict[str, ArrayHeader] = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy") or info.is_dir():
                continue
            name = info.filename[: -len(".npy")]
            with archive.open(info) as member:
                headers[name] = _read_header(member, name)
    return headers


def _read_header(handle: SupportsRead[bytes], name: str) -> ArrayHeader:
    version = np.lib.format.read_magic(handle)
    shape, fortran_order, dtype = (
        np.lib.format.read_array_header_1_0(handle)
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0(handle)
    )
    if dtype.hasobject:
        raise ValueError(f"{name}: object arrays need pickle, which is never loaded from a source")
    return ArrayHeader(name, tuple(int(n) for n in shape), dtype, bool(fortran_order))


def load_array(path: Path, array: str) -> np.ndarray:
    """A whole array, read into memory: for the small ones (a set's class labels)."""
    if path.name.lower().endswith(".npy"):
        whole: np.ndarray = np.load(path, allow_pickle=False)  # a .npy file holds one array
        return whole
    with np.load(path, allow_pickle=False) as arrays:
        member: np.ndarray = arrays[array]
        return member


def array_view(path: Path, array: str) -> np.ndarray:
    """`array` of the `.npy` or `.npz` at `path`, without reading it: memory-mapped where the bytes lie
    uncompressed in the file, else inflated once per process (see the module docstring). Remembered per file
    version (path, inode, size, modification time)."""
    status = path.stat()
    key = (path, status.st_ino, status.st_size, status.st_mtime_ns, array)
    if path.name.lower().endswith(".npy"):
        return _mapped_npy(*key)
    return _mapped_npz_member(*key) if _member_is_stored(*key) else _inflated_npz_member(*key)


@functools.lru_cache(maxsize=_MAPPED_CACHE_SIZE)
def _member_is_stored(path: Path, _inode: int, _size: int, _mtime_ns: int, array: str) -> bool:
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{array}.npy")
    return info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1


@functools.lru_cache(maxsize=_MAPPED_CACHE_SIZE)
def _mapped_npy(path: Path, _inode: int, _size: int, _mtime_ns: int, array: str) -> np.ndarray:
    if path.stem != array:
        raise KeyError(f"{path.name} holds the array {path.stem!r}, not {array!r}")
    mapped: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)  # a .npy file holds one array
    return mapped


@functools.lru_cache(maxsize=_MAPPED_CACHE_SIZE)
def _mapped_npz_member(path: Path, _inode: int, _size: int, _mtime_ns: int, array: str) -> np.ndarray:
    """A stored member's data begins after its local header, whose name and extra field lengths may differ
    from the central directory's (zip64 extras): read them from the local header itself."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{array}.npy")
    with path.open("rb") as handle:
        handle.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
        if fields[0] != b"PK\x03\x04":
            raise ValueError(f"{path.name}: member {info.filename} has no local header")
        handle.seek(fields[9] + fields[10], 1)
        header = _read_header(handle, array)
        data_offset = handle.tell()
    if data_offset + int(np.prod(header.shape)) * header.dtype.itemsize > _size:
        raise ValueError(f"{path.name}: member {info.filename} is shorter than its header promises")
    return np.memmap(
        path,
        dtype=header.dtype,
        mode="r",
        offset=data_offset,
        shape=header.shape,
        order="F" if header.fortran_order else "C",
    )


@functools.lru_cache(maxsize=INFLATED_CACHE_SIZE)
def _inflated_npz_member(path: Path, _inode: int, _size: int, _mtime_ns: int, array: str) -> np.ndarray:
    return load_array(path, array)


def read_element(path: Path, member: str) -> np.ndarray:
    """The element `member` names (`"train_images[12]"`) of the array in `path`, as its own small array."""
    try:
        array, index = parse_member(member)
        view = array_view(path, array)
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise UnreadableItemError(path, "unreadable", f"{member}: {error}") from error
    if not 0 <= index < view.shape[0]:
        raise UnreadableItemError(path, "missing", f"{member}: {array} has {view.shape[0]} elements")
    return np.array(view[index])  # a copy: the case must not keep the whole map (or inflated array) alive


def element_image(element: np.ndarray, path: Path, member: str) -> sitk.Image:
    """An element as the readers' image: (y, x) grey, (y, x, 3) RGB, or (z, y, x) a volume, unit spacing (an
    array carries no geometry). (y, x, 1) is grey."""
    import SimpleITK as sitk  # here: layout detection imports this module and needs no ITK

    if element.dtype == np.bool_:
        element = element.astype(np.uint8)
    if element.ndim == 3 and element.shape[2] == 1:
        element = element[:, :, 0]
    if element.ndim == 3 and element.shape[2] == 3 and element.dtype == np.uint8:
        return sitk.GetImageFromArray(element, isVector=True)
    if element.ndim in (2, 3):
        return sitk.GetImageFromArray(element)
    raise UnreadableItemError(
        path, "unreadable", f"{member}: shape {element.shape} is neither an image nor a volume"
    )


def read_array_item(path: Path, member: str) -> sitk.Image:
    return element_image(read_element(path, member), path, member)
