"""A tree of DICOM files indexed by header alone, and label objects (SEG, RTSTRUCT) paired with their series.

TCIA and NCI Imaging Data Commons ship segmentations as DICOM objects next to the scans: a SEG (Modality "SEG",
frames of segment masks) or an RTSTRUCT (Modality "RTSTRUCT", contours in patient coordinates). Which series
such an object labels is written inside it, by UID: a SEG's ReferencedSeriesSequence, an RTSTRUCT's
ReferencedFrameOfReferenceSequence > RTReferencedStudySequence > RTReferencedSeriesSequence, and in both the
SOP Instance UIDs of the images it was drawn on. Folders say nothing reliable (IDC gives every series a folder
of its own, label objects included; other dumps put a patient's series side by side), so pairing here is by
UID only, never by folder.

`index_dicom_tree` reads the headers of every DICOM file under a folder (sniffed by the `DICM` marker at byte
128: file names are often bare numbers) and groups them by Series Instance UID. Image files are read up to
group 0020 only, with the handful of tags the layout needs; only label objects are read further (their segment
and ROI tables). An index is remembered per folder and file listing, since layout detection asks twice.

`dicom_object_cases` and `dicom_image_cases` are the two layout finders built on it (workers/imaging/layout.py
registers them): one case per image series, its label the objects that reference it.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.tag import BaseTag

from workers.imaging.cases import Case
from workers.imaging.layout_files import IMAGE_SUFFIXES

SEG, RTSTRUCT = "SEG", "RTSTRUCT"
LABEL_MODALITIES = frozenset({SEG, RTSTRUCT})
# Objects that hold nothing to train on as an image: reports, presentation states, key object selections,
# registrations, RT plans/doses/records, real-world value maps, waveforms, encapsulated documents. Matched by
# Modality, and by SOP Class below for objects whose Modality is vague ("OT").
NON_IMAGE_MODALITIES = frozenset(
    {
        SEG,
        RTSTRUCT,
        "SR",
        "PR",
        "KO",
        "REG",
        "FID",
        "RTPLAN",
        "RTDOSE",
        "RTRECORD",
        "RWV",
        "DOC",
        "PLAN",
        "AU",
        "ECG",
        "HD",
        "EPS",
        "RESP",
        "ASMT",
    }
)
NON_IMAGE_SOP_CLASS_PREFIXES = (
    "1.2.840.10008.1.3.10",  # DICOMDIR
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, registration, fiducials, segmentation, surface segmentation
    "1.2.840.10008.5.1.4.1.1.67",  # real world value mapping
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key object selection
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF/CDA/STL
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT dose (481.1 is RT image, an image)
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT structure set
    "1.2.840.10008.5.1.4.1.1.481.4",  # RT records and plans from here on
    "1.2.840.10008.5.1.4.1.1.481.5",
    "1.2.840.10008.5.1.4.1.1.481.6",
    "1.2.840.10008.5.1.4.1.1.481.7",
    "1.2.840.10008.5.1.4.1.1.481.8",
    "1.2.840.10008.5.1.4.1.1.481.9",
)
# ContourGeometricType values that enclose an area (CLOSED_PLANAR_XOR: DICOM 2023, contours combined by XOR,
# which the even-odd fill does anyway); OPEN_PLANAR and POINT mark lines and points, not structures.
CLOSED_CONTOUR_TYPES = frozenset({"CLOSED_PLANAR", "CLOSED_PLANAR_XOR"})

_HEADER_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "ImageType",
    "Modality",
    "SeriesDescription",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "FrameOfReferenceUID",
)
_HEADER_TAGS: list[BaseTag | int] = [
    BaseTag(tag) for keyword in _HEADER_KEYWORDS if (tag := tag_for_keyword(keyword)) is not None
]
_LAST_HEADER_GROUP = 0x0020  # every tag above sits in groups 0008-0020; reading stops after them
_SEG_KEYWORDS = [*_HEADER_KEYWORDS, "ReferencedSeriesSequence", "SegmentSequence"]


@dataclass(frozen=True)
class LabelObject:
    """One SEG or RTSTRUCT instance (file). `label_table` is its local id -> name: a SEG's segment numbers,
    an RTSTRUCT's closed-contour ROIs numbered 1..n in ROI Number order."""

    path: Path
    kind: str  # SEG or RTSTRUCT
    series_uid: str
    sop_instance_uid: str
    frame_of_reference_uid: str
    referenced_series: tuple[str, ...]  # as the object names them (SEG: ReferencedSeriesSequence, ...)
    referenced_instances: frozenset[str]  # SOP Instance UIDs it was drawn on, where read (RTSTRUCT)
    label_table: dict[int, str]

    @property
    def sort_key(self) -> tuple[str, str]:
        return self.series_uid, self.sop_instance_uid


@dataclass(frozen=True)
class DicomSeriesInfo:
    """One Series Instance UID of the tree, from the headers of its files (the first file's for the
    per-series tags). `label_objects` is non-empty for SEG and RTSTRUCT series only."""

    series_uid: str
    modality: str
    patient_id: str
    study_uid: str
    sop_class_uid: str
    image_type: tuple[str, ...]
    series_number: int | None
    series_description: str
    frame_of_reference_uid: str
    files: tuple[Path, ...]  # sorted by path
    sop_instance_uids: frozenset[str]
    label_objects: tuple[LabelObject, ...] = ()

    @property
    def is_label(self) -> bool:
        return self.modality in LABEL_MODALITIES

    @property
    def is_image(self) -> bool:
        return self.modality not in NON_IMAGE_MODALITIES and not self.sop_class_uid.startswith(
            NON_IMAGE_SOP_CLASS_PREFIXES
        )

    @property
    def is_mosaic(self) -> bool:
        """Siemens mosaic: one frame tiles many slices (fMRI, DWI); the series reader cannot unpack it."""
        return "MOSAIC" in self.image_type

    @property
    def folder(self) -> Path:
        """The deepest folder holding all its files (nearly always the one folder they sit in)."""
        parents = {path.parent for path in self.files}
        if len(parents) == 1:
            return next(iter(parents))
        return Path(*_common_prefix([p.parts for p in parents]))


@dataclass(frozen=True)
class DicomIndex:
    root: Path
    series: dict[str, DicomSeriesInfo]  # by Series Instance UID, sorted
    unreadable: tuple[tuple[Path, str], ...] = ()  # DICOM files whose header did not parse, and why

    @property
    def image_series(self) -> list[DicomSeriesInfo]:
        return [s for s in self.series.values() if s.is_image]

    @property
    def label_objects(self) -> list[LabelObject]:
        return sorted(
            (obj for s in self.series.values() for obj in s.label_objects), key=lambda o: o.sort_key
        )

    def labelled_series(self, obj: LabelObject) -> tuple[str, ...]:
        """The image series in this tree that `obj` labels: those it names by Series Instance UID, else (an
        object that names none of the present series, or none at all) those holding the instances it
        references. Never by folder."""
        named = tuple(
            uid for uid in obj.referenced_series if uid in self.series and self.series[uid].is_image
        )
        if named:
            return named
        instances = obj.referenced_instances or _seg_referenced_instances(obj)
        return tuple(
            s.series_uid
            for s in self.image_series
            if instances and not instances.isdisjoint(s.sop_instance_uids)
        )


def _common_prefix(parts: list[tuple[str, ...]]) -> tuple[str, ...]:
    prefix = parts[0]
    for other in parts[1:]:
        length = 0
        while length < min(len(prefix), len(other)) and prefix[length] == other[length]:
            length += 1
        prefix = prefix[:length]
    return prefix


# --- label tables --------------------------------------------------------------------------------------------


def seg_label_table(dataset: Dataset) -> dict[int, str]:
    """A SEG's segment number -> name: SegmentLabel, else the segmented property's meaning, else
    "segment <n>" (a segment must have a name for label unification to place it)."""
    table: dict[int, str] = {}
    for item in dataset.get("SegmentSequence", []):
        number = int(item.SegmentNumber)
        name = str(item.get("SegmentLabel", "") or "").strip()
        if not name and item.get("SegmentedPropertyTypeCodeSequence"):
            name = str(item.SegmentedPropertyTypeCodeSequence[0].get("CodeMeaning", "") or "").strip()
        table[number] = name or f"segment {number}"
    return dict(sorted(table.items()))


@dataclass(frozen=True)
class RoiEntry:
    local_id: int  # 1..n in ROI Number order: the value the ROI gets in the label map
    roi_number: int
    name: str


def rtstruct_rois(dataset: Dataset) -> list[RoiEntry]:
    """An RTSTRUCT's ROIs that enclose an area (at least one CLOSED_PLANAR contour), in ROI Number order,
    numbered 1..n. ROIs drawn only as points or open lines (isocentre markers, reference lines) are left
    out: they label no voxel. ROI numbers themselves are arbitrary (often 1, 5, 17...), hence the local ids."""
    closed: set[int] = set()
    for roi_contour in dataset.get("ROIContourSequence", []):
        contours = roi_contour.get("ContourSequence", [])
        if any(str(c.get("ContourGeometricType", "")).upper() in CLOSED_CONTOUR_TYPES for c in contours):
            closed.add(int(roi_contour.ReferencedROINumber))
    names: dict[int, str] = {}
    for roi in dataset.get("StructureSetROISequence", []):
        number = int(roi.ROINumber)
        if number in closed:
            names[number] = str(roi.get("ROIName", "") or "").strip() or f"ROI {number}"
    return [RoiEntry(index, number, names[number]) for index, number in enumerate(sorted(names), start=1)]


def rtstruct_label_table(dataset: Dataset) -> dict[int, str]:
    return {roi.local_id: roi.name for roi in rtstruct_rois(dataset)}


def _rtstruct_references(dataset: Dataset) -> tuple[tuple[str, ...], frozenset[str]]:
    """(series UIDs, SOP Instance UIDs) an RTSTRUCT names: the referenced frame of reference tree, and the
    contour image sequences of that tree and of every contour."""
    series: list[str] = []
    instances: set[str] = set()
    for frame in dataset.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for referenced in study.get("RTReferencedSeriesSequence", []):
                if uid := str(referenced.get("SeriesInstanceUID", "") or ""):
                    series.append(uid)
                instances.update(_referenced_sops(referenced.get("ContourImageSequence", [])))
    for roi_contour in dataset.get("ROIContourSequence", []):
        for contour in roi_contour.get("ContourSequence", []):
            instances.update(_referenced_sops(contour.get("ContourImageSequence", [])))
    return tuple(dict.fromkeys(series)), frozenset(instances)


def _referenced_sops(items: Iterable[Dataset]) -> Iterable[str]:
    for item in items:
        if uid := str(item.get("ReferencedSOPInstanceUID", "") or ""):
            yield uid


def _seg_referenced_instances(obj: LabelObject) -> frozenset[str]:
    """The source images of a SEG's frames (DerivationImageSequence > SourceImageSequence), read only when
    its ReferencedSeriesSequence does not name a series of the tree: the per-frame groups of a large SEG are
    the slowest part of its header."""
    if obj.kind != SEG:
        return frozenset()
    try:
        dataset = pydicom.dcmread(
            obj.path,
            stop_before_pixels=True,
            specific_tags=["SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"],
        )
    except (InvalidDicomError, OSError, ValueError):
        return frozenset()
    instances: set[str] = set()
    groups = [
        *dataset.get("SharedFunctionalGroupsSequence", []),
        *dataset.get("PerFrameFunctionalGroupsSequence", []),
    ]
    for group in groups:
        for derivation in group.get("DerivationImageSequence", []):
            instances.update(_referenced_sops(derivation.get("SourceImageSequence", [])))
    return frozenset(instances)


# --- the index -----------------------------------------------------------------------------------------------


def index_dicom_tree(root: Path) -> DicomIndex:
    """Every DICOM file under `root` by series (see the module docstring). Remembered per file listing
    (path, size, modification time of each candidate file), so asking twice costs one directory walk."""
    candidates = _candidate_files(root)
    signature = hashlib.blake2b(digest_size=16)
    for path, size, mtime in candidates:
        signature.update(f"{path}\0{size}\0{mtime}\n".encode())
    return _index(root, tuple(p for p, _, _ in candidates), signature.hexdigest())


def _candidate_files(root: Path) -> list[tuple[Path, int, int]]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.name.startswith(".") or path.name.lower().endswith(IMAGE_SUFFIXES):
            continue
        try:
            status = path.stat()
        except OSError:
            continue
        if path.is_file():
            found.append((path, status.st_size, status.st_mtime_ns))
    return found


@functools.lru_cache(maxsize=4)
def _index(root: Path, files: tuple[Path, ...], _signature: str) -> DicomIndex:
    headers: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    unreadable: list[tuple[Path, str]] = []
    for path in files:
        try:
            header = _read_header(path)
        except (InvalidDicomError, OSError, ValueError, EOFError) as error:
            unreadable.append((path, str(error).splitlines()[0] if str(error) else type(error).__name__))
            continue
        if header is None:
            continue
        uid = str(header.get("SeriesInstanceUID", "") or "")
        if uid:
            headers[uid].append((path, header))
    series = {uid: _series_info(uid, members) for uid, members in sorted(headers.items())}
    return DicomIndex(root, series, tuple(unreadable))


def _read_header(path: Path) -> Dataset | None:
    """The header tags of a DICOM Part 10 file, or None for any other file. One open: sniff, then parse."""
    with path.open("rb") as handle:
        handle.seek(128)
        if handle.read(4) != b"DICM":
            return None
        handle.seek(0)
        return read_partial(
            handle,
            stop_when=lambda tag, _vr, _length: tag.group > _LAST_HEADER_GROUP,
            specific_tags=_HEADER_TAGS,
        )


def _series_info(uid: str, members: list[tuple[Path, Dataset]]) -> DicomSeriesInfo:
    members.sort(key=lambda member: member[0])
    first = members[0][1]
    modality = str(first.get("Modality", "") or "").strip().upper()
    number = first.get("SeriesNumber")
    try:
        series_number = int(number) if number not in (None, "") else None
    except (TypeError, ValueError):
        series_number = None
    objects: tuple[LabelObject, ...] = ()
    if modality in LABEL_MODALITIES:
        objects = tuple(
            obj for path, header in members if (obj := _label_object(path, header, modality)) is not None
        )
    return DicomSeriesInfo(
        series_uid=uid,
        modality=modality,
        patient_id=str(first.get("PatientID", "") or "").strip(),
        study_uid=str(first.get("StudyInstanceUID", "") or ""),
        sop_class_uid=str(first.get("SOPClassUID", "") or ""),
        image_type=tuple(_image_type(first)),
        series_number=series_number,
        series_description=str(first.get("SeriesDescription", "") or "").strip(),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "") or ""),
        files=tuple(path for path, _ in members),
        sop_instance_uids=frozenset(str(h.get("SOPInstanceUID", "") or "") for _, h in members) - {""},
        label_objects=objects,
    )


def _image_type(header: Dataset) -> list[str]:
    value = header.get("ImageType", [])
    values = [value] if isinstance(value, str) else list(value or [])
    return [str(v).strip().upper() for v in values]


def _label_object(path: Path, header: Dataset, modality: str) -> LabelObject | None:
    """A SEG read for its segment table and referenced series (not its per-frame groups); an RTSTRUCT read
    whole, without which its ROIs' contour types and referenced images are unknown. None if it will not parse:
    the job cannot use what it cannot read, and other objects may still label the series."""
    try:
        if modality == SEG:
            dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_SEG_KEYWORDS)
            table = seg_label_table(dataset)
            series = tuple(
                str(item.get("SeriesInstanceUID", "") or "")
                for item in dataset.get("ReferencedSeriesSequence", [])
                if item.get("SeriesInstanceUID")
            )
            instances: frozenset[str] = frozenset()
        else:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
            table = rtstruct_label_table(dataset)
            series, instances = _rtstruct_references(dataset)
    except (InvalidDicomError, OSError, ValueError, AttributeError, TypeError):
        return None
    return LabelObject(
        path=path,
        kind=modality,
        series_uid=str(header.get("SeriesInstanceUID", "")),
        sop_instance_uid=str(header.get("SOPInstanceUID", "") or ""),
        frame_of_reference_uid=str(dataset.get("FrameOfReferenceUID", "") or ""),
        referenced_series=series,
        referenced_instances=instances,
        label_table=table,
    )


# --- cases ---------------------------------------------------------------------------------------------------


def dicom_object_cases(root: Path) -> list[Case]:
    """The DICOM objects layout: applies when the tree holds at least one SEG or RTSTRUCT.

    One case per image series (never a SEG, RTSTRUCT, SR, KO, PR, REG, RT plan/dose...), subject = PatientID,
    modality and series UID from its header; unlabelled image series are cases too (without label). Its label
    is the label object(s) that reference it by UID (`DicomIndex.labelled_series`); an object referencing no
    series of the tree labels nothing and is not packaged.

    Several objects on one series are combined (`label` + `extra_labels`, one label table) when each adds
    structures of its own: objects are taken in Series/SOP Instance UID order, and one that names a structure
    an earlier one already has (two readers' versions of one tumour, a manual and an AI liver) is left out,
    with the reason in the case's `notes`. Label ids are given per source, not per case: a name keeps one id
    across every case of the tree (first seen, objects in UID order), since the fusion job reads one label
    table per source.

    A Siemens mosaic is still a case, which the reader skips with its reason (workers/imaging/readers.py).
    """
    index = index_dicom_tree(root)
    if not index.label_objects:
        return []
    return _cases(index)


def dicom_image_cases(root: Path) -> list[Case]:
    """Last resort for a DICOM tree without label objects and without label files (an IDC collection without
    segmentations, a plain scan dump): every image series one unlabelled case."""
    index = index_dicom_tree(root)
    if index.label_objects:
        return []  # dicom_object_cases' tree; it found no image series to label
    return _cases(index)


def _cases(index: DicomIndex) -> list[Case]:
    images = index.image_series
    if not images:
        return []
    labels_of: dict[str, list[LabelObject]] = defaultdict(list)
    for obj in index.label_objects:
        for uid in index.labelled_series(obj):
            labels_of[uid].append(obj)
    chosen = {s.series_uid: _choose_labels(labels_of[s.series_uid]) for s in images}
    ids = _source_label_ids(obj for kept, _ in chosen.values() for obj in kept)
    case_ids = _case_ids(images)
    cases = []
    for info in images:
        kept, notes = chosen[info.series_uid]
        table = {ids[name]: name for obj in kept for name in obj.label_table.values()}
        cases.append(
            Case(
                case_id=case_ids[info.series_uid],
                subject_id=info.patient_id or _first_part(info.folder, index.root),
                images=(info.folder,),
                label=kept[0].path if kept else None,
                label_table=dict(sorted(table.items())),
                modality=info.modality or None,
                series_uid=info.series_uid,
                extra_labels=tuple(obj.path for obj in kept[1:]),
                notes=tuple(notes),
            )
        )
    return sorted(cases, key=lambda c: c.case_id)


def _choose_labels(objects: list[LabelObject]) -> tuple[list[LabelObject], list[str]]:
    """The objects that combine into one label map, and a note for each one left out (see
    dicom_object_cases). Structures are compared as concepts ("Liver" and "liver" are one)."""
    from app.common.labels import BACKGROUND, normalise_concept

    kept: list[LabelObject] = []
    seen: dict[str, LabelObject] = {}
    notes: list[str] = []
    for obj in sorted(objects, key=lambda o: o.sort_key):
        if not obj.label_table:
            notes.append(f"{obj.kind} {obj.sop_instance_uid} left out: it names no segment or closed ROI")
            continue
        concepts = {normalise_concept(name) for name in obj.label_table.values()} - {BACKGROUND}
        clash = sorted(concept for concept in concepts if concept in seen)
        if clash:
            earlier = seen[clash[0]]
            notes.append(
                f"{obj.kind} {obj.sop_instance_uid} left out: it draws {', '.join(clash)} again, already "
                f"drawn by {earlier.kind} {earlier.sop_instance_uid} (objects are combined only when each "
                "adds structures of its own; the first by Series Instance UID is kept)"
            )
            continue
        kept.append(obj)
        for concept in concepts:
            seen[concept] = obj
    return kept, notes


def _source_label_ids(objects: Iterable[LabelObject]) -> dict[str, int]:
    ids: dict[str, int] = {}
    unique = {obj.sort_key: obj for obj in objects}  # an RTSTRUCT on two series is kept for both
    for _key, obj in sorted(unique.items()):
        for _local, name in sorted(obj.label_table.items()):
            ids.setdefault(name, len(ids) + 1)
    return ids


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _case_ids(series: list[DicomSeriesInfo]) -> dict[str, str]:
    """`<PatientID>_<Modality><SeriesNumber>` (e.g. `LIDC-0001_CT3000566`), with 8 hex digits of the
    Series Instance UID's hash appended wherever that is not unique (two studies of one patient reuse series
    numbers)."""
    readable = {}
    for info in series:
        patient = _UNSAFE.sub("-", info.patient_id).strip("-") or "patient"
        number = "" if info.series_number is None else str(info.series_number)
        readable[info.series_uid] = f"{patient}_{_UNSAFE.sub('', info.modality) or 'image'}{number}"
    counts: dict[str, int] = defaultdict(int)
    for name in readable.values():
        counts[name] += 1
    return {
        uid: name if counts[name] == 1 else f"{name}_{hashlib.sha1(uid.encode()).hexdigest()[:8]}"
        for uid, name in readable.items()
    }


def _first_part(folder: Path, root: Path) -> str:
    try:
        parts = folder.relative_to(root).parts
    except ValueError:
        parts = ()
    return parts[0] if parts else root.name


def label_objects_of(case: Case) -> tuple[Path, ...]:
    """A case's label objects in painting order (`label`, then `extra_labels`)."""
    return ((case.label,) if case.label is not None else ()) + tuple(case.extra_labels)
