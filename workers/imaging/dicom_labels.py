"""DICOM label objects (SEG, RTSTRUCT) drawn onto the grid of the image series they label.

A case of the DICOM objects layout (workers/imaging/dicom_objects.py) is an image series plus the label objects
that reference it. `read_dicom_label(case, geometry)` turns them into one label image with exactly the series'
geometry as read (before reorientation; harmonise then reorients it with the image), whose values are the ids of
the case's label table. A segment or ROI gets the id of its name in that table (the layout gives a name one id
per source; a descriptor's own `labels` table may rename them, matched by concept): a name the table lacks is
an error, never background.

SEG (read with highdicom). Each frame goes to the slice of the series volume, as SimpleITK's series reader orders
it (slice k = k-th file of `readers.find_dicom_series`), whose SOP Instance UID the frame names as its source
image. A frame whose source is not in the series, or whose spatial locations were not preserved, is placed by its
plane position instead, which requires the SEG to share the series' frame of reference and its frames to lie
on the series' grid (same orientation, pixel spacing and in-plane origin). BINARY frames are taken as stored,
FRACTIONAL ones where value / MaximumFractionalValue >= 0.5, LABELMAP frames hold segment numbers.

RTSTRUCT (read with pydicom). Each ROI's CLOSED_PLANAR contours are put in the series' continuous index
coordinates and filled slice by slice with the even-odd rule over all of the ROI's contours on that slice (a
contour inside another is a hole). Boundary rule: a voxel belongs to the ROI when its centre lies inside the
filled area or on a contour (within ON_CONTOUR_TOLERANCE voxel, for coordinates rounded when they were
printed): the ROI is the closed region its contours bound. Masks traced through their boundary voxels' centres
(as rt-utils and most contouring tools export them) come back voxel for voxel. A contour more than half a slice
away from every slice plane of the series (beyond its first or last slice, or tilted out of the slice plane) is
an error with its reason. Pillow's polygon fill is not used: it snaps vertices to whole pixels, which moves
boundaries by up to a voxel.

Overlaps, deterministic: objects are painted in the case's order (`label`, then `extra_labels`), each one's
segments / ROIs in ascending number, and a later one overwrites an earlier one where they overlap (a tumour
drawn after its organ stays the tumour, as viewers show it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset

from workers.imaging.cases import Case
from workers.imaging.dicom_objects import (
    CLOSED_CONTOUR_TYPES,
    RTSTRUCT,
    SEG,
    label_objects_of,
    rtstruct_rois,
    seg_label_table,
)
from workers.imaging.errors import UnreadableItemError
from workers.imaging.layout_files import is_dicom_file
from workers.imaging.orientation import OriginalGeometry
from workers.imaging.readers import DicomSeries, find_dicom_series, list_dicom_series

# A contour point this close (in voxels) to a voxel centre counts as passing through it: DICOM prints
# coordinates as decimal strings of at most 16 characters, and exporters compute them in float32.
ON_CONTOUR_TOLERANCE = 1e-3
# A contour point may lie this far (in slices) from the slice plane its contour is put on.
SLICE_TOLERANCE = 0.5
# A SEG frame placed by position must sit this close (in voxels) to a voxel of the series' grid.
FRAME_POSITION_TOLERANCE = 0.1
# Direction cosines and pixel spacing of a SEG frame placed by position, against the series'.
FRAME_ORIENTATION_TOLERANCE = 1e-3
FRAME_SPACING_RELATIVE_TOLERANCE = 1e-3
FRACTIONAL_THRESHOLD = 0.5


def is_dicom_label(path: Path) -> bool:
    """A label path that is a DICOM Part 10 file (SEG or RTSTRUCT), not a volume file."""
    return is_dicom_file(path)


def read_dicom_label(case: Case, geometry: OriginalGeometry | None) -> sitk.Image:
    """The case's label objects as one label image on its series' grid as read (`geometry`, from
    reorient_to_ras), uint8 or uint16 by the largest id. See the module docstring for the rules."""
    objects = label_objects_of(case)
    if geometry is None or len(geometry.size) != 3:
        raise UnreadableItemError(objects[0], "label_mismatch", "DICOM label objects need a 3D image series")
    series = _series(case)
    size = tuple(int(v) for v in geometry.size)
    if len(series.files) != size[2]:
        raise UnreadableItemError(
            case.images[0],
            "label_mismatch",
            f"series {series.series_id} has {len(series.files)} files but its volume {size[2]} slices",
        )
    slices = _SeriesSlices.read(series)
    largest = max(case.label_table, default=0)
    out = np.zeros((size[2], size[1], size[0]), dtype=np.uint8 if largest <= 255 else np.uint16)
    for path in objects:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
        kind = str(dataset.get("Modality", "")).upper()
        if kind == SEG:
            _paint_seg(path, out, case.label_table, slices, geometry)
        elif kind == RTSTRUCT:
            _paint_rtstruct(path, out, case.label_table, geometry)
        else:
            raise UnreadableItemError(
                path, "unreadable", f"label object of modality {kind or '?'}, not SEG/RTSTRUCT"
            )
    image = sitk.GetImageFromArray(out)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def _series(case: Case) -> DicomSeries:
    folder = case.images[0]
    if case.series_uid:
        return find_dicom_series(folder, case.series_uid)
    found = list_dicom_series(folder)
    if len(found) != 1:
        raise UnreadableItemError(folder, "several_series", "the label's image series is not named")
    return found[0]


class _SeriesSlices:
    """Slice index by SOP Instance UID, in the series reader's order, and the series' frame of reference."""

    def __init__(self, uids: list[str], frame_of_reference: str) -> None:
        self.index = {uid: k for k, uid in enumerate(uids) if uid}
        self.frame_of_reference = frame_of_reference

    @classmethod
    def read(cls, series: DicomSeries) -> _SeriesSlices:
        uids, frames = [], set()
        for name in series.files:
            header = pydicom.dcmread(
                name, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "FrameOfReferenceUID"]
            )
            uids.append(str(header.get("SOPInstanceUID", "") or ""))
            frames.add(str(header.get("FrameOfReferenceUID", "") or ""))
        return cls(uids, next(iter(frames)) if len(frames) == 1 else "")


def _ids_for(path: Path, local_table: Mapping[int, str], case_table: Mapping[int, str]) -> dict[int, int]:
    """Local segment/ROI number -> the case's label id, by name (exact, else the same concept)."""
    from app.common.labels import normalise_concept

    by_name: dict[str, int] = {}
    by_concept: dict[str, int] = {}
    for case_id, name in sorted(case_table.items()):
        by_name.setdefault(name, case_id)
        by_concept.setdefault(normalise_concept(name), case_id)
    ids: dict[int, int] = {}
    for local, name in local_table.items():
        label_id = by_name.get(name, by_concept.get(normalise_concept(name)))
        if label_id is None:
            raise UnreadableItemError(
                path, "unknown_label_value", f"{name!r} (number {local}) is not in the source's label table"
            )
        ids[local] = label_id
    return ids


# --- SEG -----------------------------------------------------------------------------------------------------


def _paint_seg(
    path: Path,
    out: np.ndarray,
    case_table: Mapping[int, str],
    slices: _SeriesSlices,
    geometry: OriginalGeometry,
) -> None:
    import highdicom as hd

    try:
        seg = hd.seg.segread(path, lazy_frame_retrieval=True)
    except Exception as error:  # highdicom raises ValueError/AttributeError/KeyError on malformed objects
        raise UnreadableItemError(path, "unreadable", f"not a readable SEG ({error})") from error
    ids = _ids_for(path, seg_label_table(seg), case_table)
    rows, columns = int(seg.Rows), int(seg.Columns)
    if (columns, rows) != (out.shape[2], out.shape[1]):
        raise UnreadableItemError(
            path,
            "label_mismatch",
            f"SEG frames are {columns}x{rows}, the series' slices {out.shape[2]}x{out.shape[1]}",
        )
    kind = seg.segmentation_type.value
    shared = seg.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    per_frame = seg.get("PerFrameFunctionalGroupsSequence", [])
    placer = _FramePlacer(path, seg, shared, slices, geometry)
    painted: list[tuple[int, int, int]] = []  # (segment number or 0 for LABELMAP, frame index, slice)
    for index in range(seg.number_of_frames):
        group = per_frame[index] if index < len(per_frame) else Dataset()
        segment = 0 if kind == "LABELMAP" else _frame_segment(path, group, shared, index)
        painted.append((segment, index, placer.slice_of(group, index)))
    maximum = float(seg.get("MaximumFractionalValue", 1) or 1)
    for segment, index, k in sorted(painted):
        frame = seg.get_stored_frame(index, as_index=True)
        if kind == "LABELMAP":
            for number in np.unique(frame):
                if number == 0:
                    continue
                if int(number) not in ids:
                    raise UnreadableItemError(
                        path, "unknown_label_value", f"LABELMAP value {number} names no segment"
                    )
                out[k][frame == number] = ids[int(number)]
            continue
        if segment not in ids:
            raise UnreadableItemError(
                path, "unknown_label_value", f"frame {index + 1} names segment {segment}, not in the SEG"
            )
        mask = frame > 0 if kind == "BINARY" else frame.astype(np.float64) / maximum >= FRACTIONAL_THRESHOLD
        out[k][mask] = ids[segment]


def _frame_segment(path: Path, group: Dataset, shared: Dataset, index: int) -> int:
    for source in (group, shared):
        items = source.get("SegmentIdentificationSequence")
        if items:
            return int(items[0].ReferencedSegmentNumber)
    raise UnreadableItemError(path, "unreadable", f"SEG frame {index + 1} names no segment")


def _item(group: Dataset, shared: Dataset, sequence: str) -> Dataset | None:
    for source in (group, shared):
        items = source.get(sequence)
        if items:
            first: Dataset = items[0]  # a sequence's items are datasets
            return first
    return None


class _FramePlacer:
    """The slice of the series a SEG frame belongs on: by source image, else by plane position."""

    def __init__(
        self, path: Path, seg: Dataset, shared: Dataset, slices: _SeriesSlices, geometry: OriginalGeometry
    ) -> None:
        self.path, self.shared, self.slices = path, shared, slices
        self.same_frame_of_reference = (
            bool(slices.frame_of_reference)
            and str(seg.get("FrameOfReferenceUID", "")) == slices.frame_of_reference
        )
        self.origin = np.asarray(geometry.origin, dtype=np.float64)
        self.direction = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)
        self.spacing = np.asarray(geometry.spacing, dtype=np.float64)
        self.to_index = np.linalg.inv(self.direction @ np.diag(self.spacing))
        self.depth = int(geometry.size[2])

    def slice_of(self, group: Dataset, index: int) -> int:
        for derivation in [
            *group.get("DerivationImageSequence", []),
            *self.shared.get("DerivationImageSequence", []),
        ]:
            for source in derivation.get("SourceImageSequence", []):
                if str(source.get("SpatialLocationsPreserved", "YES")).upper() == "NO":
                    continue
                k = self.slices.index.get(str(source.get("ReferencedSOPInstanceUID", "")))
                if k is not None:
                    return k
        return self._by_position(group, index)

    def _by_position(self, group: Dataset, index: int) -> int:
        where = f"SEG frame {index + 1}"
        if not self.same_frame_of_reference:
            raise UnreadableItemError(
                self.path,
                "label_mismatch",
                f"{where} names no image of the series and the SEG is not on its frame of reference",
            )
        position = _item(group, self.shared, "PlanePositionSequence")
        orientation = _item(group, self.shared, "PlaneOrientationSequence")
        measures = _item(group, self.shared, "PixelMeasuresSequence")
        if position is None or orientation is None or measures is None:
            raise UnreadableItemError(
                self.path, "label_mismatch", f"{where} has no plane position to place it by"
            )
        cosines = np.asarray([float(v) for v in orientation.ImageOrientationPatient], dtype=np.float64)
        pixel = np.asarray(
            [float(v) for v in measures.PixelSpacing], dtype=np.float64
        )  # (row, column) spacing
        if (
            np.max(np.abs(cosines[:3] - self.direction[:, 0])) > FRAME_ORIENTATION_TOLERANCE
            or np.max(np.abs(cosines[3:] - self.direction[:, 1])) > FRAME_ORIENTATION_TOLERANCE
            or np.max(np.abs(pixel[::-1] - self.spacing[:2]) / self.spacing[:2])
            > FRAME_SPACING_RELATIVE_TOLERANCE
        ):
            raise UnreadableItemError(
                self.path,
                "label_mismatch",
                f"{where} is not on the series' grid (orientation or pixel spacing)",
            )
        point = np.asarray([float(v) for v in position.ImagePositionPatient], dtype=np.float64)
        i, j, k = self.to_index @ (point - self.origin)
        slice_index = round(float(k))
        if (
            max(abs(i), abs(j), abs(k - slice_index)) > FRAME_POSITION_TOLERANCE
            or not 0 <= slice_index < self.depth
        ):
            raise UnreadableItemError(
                self.path,
                "label_mismatch",
                f"{where} at {_mm(point)} is not on a slice of the series (index {i:.2f}, {j:.2f}, {k:.2f})",
            )
        return slice_index


# --- RTSTRUCT ------------------------------------------------------------------------------------------------


def _paint_rtstruct(
    path: Path, out: np.ndarray, case_table: Mapping[int, str], geometry: OriginalGeometry
) -> None:
    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:  # pydicom raises InvalidDicomError, ValueError, EOFError... on broken files
        raise UnreadableItemError(path, "unreadable", f"not a readable RTSTRUCT ({error})") from error
    rois = rtstruct_rois(dataset)
    ids = _ids_for(path, {roi.local_id: roi.name for roi in rois}, case_table)
    contours_of: dict[int, list[np.ndarray]] = defaultdict(list)
    for roi_contour in dataset.get("ROIContourSequence", []):
        for contour in roi_contour.get("ContourSequence", []):
            if str(contour.get("ContourGeometricType", "")).upper() not in CLOSED_CONTOUR_TYPES:
                continue
            points = np.asarray([float(v) for v in contour.get("ContourData", [])], dtype=np.float64)
            # one or two points are kept too: exporters trace a lone voxel or a one-voxel line that way, and under
            # the boundary rule they mark exactly the voxels they pass through
            if points.size >= 3 and points.size % 3 == 0:
                contours_of[int(roi_contour.ReferencedROINumber)].append(points.reshape(-1, 3))
    origin = np.asarray(geometry.origin, dtype=np.float64)
    to_index = np.linalg.inv(
        np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3) @ np.diag(np.asarray(geometry.spacing))
    )
    depth, height, width = out.shape
    for roi in rois:  # ascending local id: later ROIs overwrite earlier ones
        by_slice: dict[int, list[np.ndarray]] = defaultdict(list)
        for points in contours_of[roi.roi_number]:
            index = (points - origin) @ to_index.T
            k = float(np.median(index[:, 2]))
            slice_index = round(k)
            off = float(np.max(np.abs(index[:, 2] - slice_index)))
            if off > SLICE_TOLERANCE or not 0 <= slice_index < depth:
                nearest = min(max(slice_index, 0), depth - 1)
                distance = float(np.max(np.abs(index[:, 2] - nearest)))
                raise UnreadableItemError(
                    path,
                    "contour_off_slice",
                    f"ROI {roi.name!r}: a contour at {_mm(points[0])} lies {distance:.2f} slices from the nearest "
                    "slice plane of the series (more than half a slice)",
                )
            by_slice[slice_index].append(index[:, :2])
        for slice_index, polygons in by_slice.items():
            mask = rasterise_polygons(polygons, (height, width))
            out[slice_index][mask] = ids[roi.local_id]


def rasterise_polygons(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """A (rows, columns) boolean mask of the closed region the polygons bound under the even-odd rule.

    Each polygon is an (n, 2) array of continuous (column, row) index coordinates, closed implicitly (last
    point to first). A pixel is in when its centre (integer coordinates) is inside (an odd number of
    boundaries crossed to reach it) or lies on an edge (within ON_CONTOUR_TOLERANCE). Vectorised scanline:
    every edge is crossed with every row of pixel centres it spans, half-open in y so that a vertex on a row
    counts once; crossings pair up along each row into filled runs."""
    height, width = shape
    if not polygons:
        return np.zeros(shape, dtype=bool)
    starts = np.concatenate([np.asarray(p, dtype=np.float64) for p in polygons])
    ends = np.concatenate([np.roll(np.asarray(p, dtype=np.float64), -1, axis=0) for p in polygons])
    x0, y0, x1, y1 = starts[:, 0], starts[:, 1], ends[:, 0], ends[:, 1]

    # interior: rows y = r with min(y0, y1) <= r < max(y0, y1) (horizontal edges cross no row)
    low, high = np.minimum(y0, y1), np.maximum(y0, y1)
    first = np.maximum(np.ceil(low), 0).astype(np.int64)
    last = np.minimum(np.ceil(high) - 1, height - 1).astype(np.int64)
    edge, rows = _expand(first, last)
    inside = np.zeros((height, width + 1), dtype=np.int32)
    if edge.size:
        xs = x0[edge] + (rows - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
        order = np.lexsort((xs, rows))
        rows, xs = rows[order], xs[order]
        rank = np.arange(rows.size) - np.searchsorted(rows, rows, side="left")
        # a closed polygon crosses every row an even number of times, so crossings pair up within a row
        start = np.nonzero(rank % 2 == 0)[0]
        start = start[start + 1 < rows.size]
        start = start[rows[start] == rows[np.minimum(start + 1, rows.size - 1)]]
        run_rows, left, right = rows[start], xs[start], xs[start + 1]
        left_pixel = np.maximum(np.ceil(left), 0).astype(np.int64)
        right_pixel = np.minimum(np.floor(right), width - 1).astype(np.int64)
        keep = left_pixel <= right_pixel
        np.add.at(inside, (run_rows[keep], left_pixel[keep]), 1)
        np.add.at(inside, (run_rows[keep], right_pixel[keep] + 1), -1)
    mask = np.cumsum(inside, axis=1)[:, :width] > 0
    _mark_on_edges(mask, x0, y0, x1, y1)
    return mask


def _expand(first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges [first[e], last[e]] (empty when last < first): (range number, value) of every member."""
    counts = np.maximum(last - first + 1, 0)
    total = int(counts.sum())
    which = np.repeat(np.arange(first.size), counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return which, first[which] + offsets


def _mark_on_edges(mask: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> None:
    """Set every pixel whose centre lies on an edge: step through the integer positions along each edge's
    longer axis and keep those where the other coordinate is an integer too."""
    height, width = mask.shape
    for along_x in (True, False):
        major = np.abs(x1 - x0) >= np.abs(y1 - y0)
        pick = major if along_x else ~major
        u0, u1 = (x0, x1) if along_x else (y0, y1)
        v0, v1 = (y0, y1) if along_x else (x0, x1)
        u0, u1, v0, v1 = u0[pick], u1[pick], v0[pick], v1[pick]
        extent = width if along_x else height
        first = np.maximum(np.ceil(np.minimum(u0, u1) - ON_CONTOUR_TOLERANCE), 0).astype(np.int64)
        last = np.minimum(np.floor(np.maximum(u0, u1) + ON_CONTOUR_TOLERANCE), extent - 1).astype(np.int64)
        edge, u = _expand(first, last)
        if not edge.size:
            continue
        du = u1[edge] - u0[edge]
        slope = np.divide(v1[edge] - v0[edge], du, out=np.zeros_like(du), where=du != 0)
        v = v0[edge] + (u - u0[edge]) * slope
        v_pixel = np.round(v).astype(np.int64)
        on = np.abs(v - v_pixel) <= ON_CONTOUR_TOLERANCE
        columns, rows = (u, v_pixel) if along_x else (v_pixel, u)
        on &= (columns >= 0) & (columns < width) & (rows >= 0) & (rows < height)
        mask[rows[on], columns[on]] = True


def _mm(point: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in point) + ") mm"
