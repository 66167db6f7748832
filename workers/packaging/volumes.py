"""The 3D cases' image and label volumes: written ahead by the harmonise unit (`prewrite_volumes`, so a job's
compression runs on all its workers) and placed into the bundle by link; or, for arrays handed straight to
`build_bundle`, written in parallel holding only a few cases in memory at once.

Compression dominates that time, so cases are spread over workers. Threads are the default: the ISA-L
block compressor and hashlib release the GIL and threads need no copy of the arrays. Processes pickle every
array to the worker, which bench/fusion measured as slower than a single thread, so they are only an option.
At most `max_in_flight` cases are submitted and not yet written, so a generator of cases streams through in
bounded memory.
"""

from __future__ import annotations

import os
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

from workers.packaging.cases import PrewrittenVolumes, VolumeFile
from workers.packaging.nifti_gz import DEFAULT_LEVEL, WrittenFile, write_nifti_gz

Parallelism = Literal["threads", "processes", "none"]
K = TypeVar("K")
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class VolumeJob:
    """Everything a worker needs to write one case (picklable, for process pools)."""

    image_path: Path
    image: np.ndarray | None
    label_path: Path | None
    label: np.ndarray | None
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    level: int = DEFAULT_LEVEL
    compress_threads: int = 1
    prewritten: PrewrittenVolumes | None = None  # files to link into place instead of arrays to compress
    extra_paths: tuple[Path, ...] = ()  # channels 1.. of a multi-channel case
    extra_images: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class VolumeResult:
    image: WrittenFile
    label: WrittenFile | None
    extra: tuple[WrittenFile, ...] = ()


def label_dtype(label: np.ndarray) -> np.dtype:
    """The smallest unsigned type that holds the label values (uint8 for up to 255 concepts)."""
    return label_dtype_for(int(label.max()) if label.size else 0)


def label_dtype_for(largest: int) -> np.dtype:
    """What a label map whose largest value is `largest` is stored as (a copied label must match it)."""
    return np.dtype(np.uint8) if largest < 256 else np.dtype(np.uint16)


def place_file(source: Path, target: Path) -> None:
    """Hard-link `source` to `target` (a copy across file systems); the bytes are final already."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
        with open(target, "rb") as handle:
            os.fsync(handle.fileno())


def write_volume_job(job: VolumeJob) -> VolumeResult:
    if job.prewritten is not None:
        done = job.prewritten
        place_file(done.image.path, job.image_path)
        image_file = WrittenFile(path=job.image_path, size=done.image.size, sha256=done.image.sha256)
        label_file = None
        if done.label is not None and job.label_path is not None:
            place_file(done.label.path, job.label_path)
            label_file = WrittenFile(path=job.label_path, size=done.label.size, sha256=done.label.sha256)
        extra = []
        for written, target in zip(done.extra_images, job.extra_paths, strict=True):
            place_file(written.path, target)
            extra.append(WrittenFile(path=target, size=written.size, sha256=written.sha256))
        return VolumeResult(image=image_file, label=label_file, extra=tuple(extra))
    assert job.image is not None
    image = write_nifti_gz(
        job.image_path, job.image, job.spacing, job.origin, job.direction, job.level, job.compress_threads
    )
    label = None
    if job.label is not None and job.label_path is not None:
        values = job.label.astype(label_dtype(job.label), copy=False)
        label = write_nifti_gz(
            job.label_path, values, job.spacing, job.origin, job.direction, job.level, job.compress_threads
        )
    extra_files = tuple(
        write_nifti_gz(path, array, job.spacing, job.origin, job.direction, job.level, job.compress_threads)
        for path, array in zip(job.extra_paths, job.extra_images, strict=True)
    )
    return VolumeResult(image=image, label=label, extra=extra_files)


def _executor(parallelism: Parallelism, workers: int) -> Executor | None:
    if parallelism == "none" or workers <= 1:
        return None
    if parallelism == "processes":
        return ProcessPoolExecutor(max_workers=workers)
    return ThreadPoolExecutor(max_workers=workers)


def map_bounded(
    function: Callable[[T], R],
    pairs: Iterable[tuple[K, T]],
    parallelism: Parallelism,
    workers: int,
    max_in_flight: int | None = None,
) -> Iterator[tuple[K, R]]:
    """For (key, payload) pairs yield (key, function(payload)) in input order, never holding more than
    `max_in_flight` pending payloads. Only the payload goes to the worker (keys may be unpicklable or big)."""
    executor = _executor(parallelism, workers)
    if executor is None:
        for key, payload in pairs:
            yield key, function(payload)
        return
    limit = max_in_flight or workers + 1
    pending: deque[tuple[K, Future[R]]] = deque()
    with executor:
        try:
            for key, payload in pairs:
                pending.append((key, executor.submit(function, payload)))
                if len(pending) >= limit:
                    done_key, future = pending.popleft()
                    yield done_key, future.result()
            while pending:
                done_key, future = pending.popleft()
                yield done_key, future.result()
        finally:
            for _key, future in pending:
                future.cancel()


def prewritten_path(folder: Path, name: str, suffix: str) -> Path:
    """Where a case's prewritten volume goes: `suffix` is `image`, `label` or `image<N>` (channel N)."""
    return folder / f"{name}.{suffix}.nii.gz"


def prewrite_volumes(
    folder: Path,
    name: str,
    image: np.ndarray,
    label: np.ndarray | None,
    spacing: tuple[float, ...],
    origin: tuple[float, ...],
    direction: tuple[float, ...],
    level: int = DEFAULT_LEVEL,
    extra_images: Sequence[np.ndarray] = (),
) -> PrewrittenVolumes:
    """Compress one 3D case ahead of packaging, as `<name>.image.nii.gz` and `<name>.label.nii.gz` in `folder`
    (each under a temporary name, then renamed): the same bytes the packager would write, so a bundle built
    from prewritten cases is identical to one built from arrays. This is how a job spreads the costly part,
    compression, over all its workers."""
    folder.mkdir(parents=True, exist_ok=True)

    def write(suffix: str, array: np.ndarray) -> VolumeFile:
        final = prewritten_path(folder, name, suffix)
        temporary = folder / f".{name}.{suffix}.{os.getpid()}.tmp"
        try:
            written = write_nifti_gz(temporary, array, spacing, origin, direction, level)
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
        return VolumeFile(path=final, size=written.size, sha256=written.sha256)

    image_file = write("image", image)
    label_file, label_range = None, None
    if label is not None:
        label_file = write("label", label.astype(label_dtype(label), copy=False))
        label_range = (int(label.min()), int(label.max())) if label.size else None
    extra = tuple(write(f"image{index}", array) for index, array in enumerate(extra_images, start=1))
    return PrewrittenVolumes(
        image=image_file,
        label=label_file,
        shape=tuple(int(n) for n in image.shape),
        label_range=label_range,
        extra_images=extra,
    )
