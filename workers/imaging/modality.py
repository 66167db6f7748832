"""A case's imaging modality from its data: the DICOM header, an MSD / nnU-Net `dataset.json`, a BIDS suffix;
the catalog's entry only when the data says nothing.

The catalog describes a dataset ("CT, MR") and its first modality is no statement about one series: an MR
series of such a dataset packaged as CT is normalised by nnU-Net as CT. Where the data and the catalog
disagree, the data wins and the case records the disagreement for people to check.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.common.vocabularies import MODALITY
from workers.imaging.cases import Case
from workers.imaging.layout_files import is_dicom_file, split_suffix

ModalityFrom = Literal["dicom", "dataset.json", "bids", "catalog"]
WHAT_SAYS: dict[str, str] = {
    "dicom": "the DICOM header",
    "dataset.json": "the source's dataset.json",
    "bids": "the BIDS file name",
    "catalog": "the catalog",
}

# MSD's `modality` and nnU-Net v2's `channel_names` name channels, not always modalities: MR sequences
# ("FLAIR", "T1w", "ADC"), or a normalisation scheme ("zscore", "noNorm") that says nothing of the scanner
_MR_CHANNELS = re.compile(
    r"^(mri?|t1|t1w|t1c|t1ce|t1gd|t1\+c|t2|t2w|t2\*|t2star|t2starw|flair|pd|pdw|adc|dwi|dti|swi|bold|hbv|"
    r"cine|lge|de|perfusion)$",
    re.IGNORECASE,
)
# BIDS suffixes (the last `_` part of a file name) and the modality they belong to (BIDS specification:
# anat, func, dwi, perf, pet and the CT extension's modality labels)
BIDS_SUFFIXES: dict[str, str] = {
    **{
        suffix.lower(): "MR"
        for suffix in [
            "T1w",
            "T2w",
            "PDw",
            "T2starw",
            "FLAIR",
            "inplaneT1",
            "inplaneT2",
            "PDT2",
            "angio",
            "T1map",
            "T2map",
            "T2starmap",
            "R1map",
            "R2map",
            "R2starmap",
            "PDmap",
            "MTRmap",
            "MTsat",
            "UNIT1",
            "T1rho",
            "MWFmap",
            "MTVmap",
            "Chimap",
            "S0map",
            "M0map",
            "TB1map",
            "RB1map",
            "bold",
            "cbv",
            "phase",
            "sbref",
            "dwi",
            "epi",
            "fieldmap",
            "magnitude",
            "magnitude1",
            "magnitude2",
            "phasediff",
            "phase1",
            "phase2",
            "asl",
            "m0scan",
            "MEGRE",
            "MESE",
            "VFA",
            "IRT1",
            "MP2RAGE",
            "MPM",
            "MTS",
            "MTR",
        ]
    },
    "ct": "CT",
    "pet": "PT",
}
_BIDS_NAME = re.compile(r"^sub-[A-Za-z0-9]+(?:_[A-Za-z]+-[A-Za-z0-9]+)*_(?P<suffix>[A-Za-z0-9]+)$")


@dataclass(frozen=True)
class ModalityFinding:
    modality: str  # a term of the catalog's modality vocabulary ("CT", "MR", "PT", ...), or "image"
    found_from: ModalityFrom
    disagreement: str | None  # e.g. "catalog says CT, the DICOM header says MR"


def vocabulary_modality(text: str) -> str | None:
    """The catalog vocabulary's term for a modality as written anywhere ("MRI", "PT", "CR" -> "MR", "PT",
    "XR"), or None; "OT" (DICOM's "other") and the like say nothing, so they are None too."""
    term = MODALITY.resolve(text) if text.strip() else None
    return None if term == "OTHER" else term


def channel_modality(channel_names: Sequence[str]) -> str | None:
    """The modality a dataset.json's channel names state: CT, PET or one MR sequence per channel; None when
    they name something else or mix modalities (those stay per channel)."""
    found: set[str] = set()
    for name in channel_names:
        if _MR_CHANNELS.match(name.strip()):
            found.add("MR")
        elif (term := vocabulary_modality(name)) is not None:
            found.add(term)
        else:
            return None
    return found.pop() if len(found) == 1 else None


def bids_modality(path: Path) -> str | None:
    """The modality a BIDS file name's suffix states (`sub-01_ses-1_T1w.nii.gz` -> MR), or None."""
    match = _BIDS_NAME.match(split_suffix(path)[0])
    return BIDS_SUFFIXES.get(match["suffix"].lower()) if match else None


def dicom_header_modality(path: Path) -> str | None:
    """The Modality tag of the first DICOM file of a series folder (or of the file itself), or None."""
    import pydicom

    if path.is_dir():
        first = next((p for p in sorted(path.iterdir()) if p.is_file() and is_dicom_file(p)), None)
    else:
        first = path if is_dicom_file(path) else None
    if first is None:
        return None
    try:
        header = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["Modality"])
    except (OSError, ValueError, pydicom.errors.InvalidDicomError):
        return None
    return vocabulary_modality(str(header.get("Modality", "") or ""))


def case_modality(case: Case, catalog_modalities: Sequence[str]) -> ModalityFinding:
    """Where the data states it, the data's modality; else the catalog's first. A catalog that lists several
    modalities ("CT, MR") is no disagreement with either; one that does not list the data's is."""
    found: tuple[str, ModalityFrom] | None = None
    header = vocabulary_modality(case.modality) if case.modality else None
    if header is None and case.images:
        header = dicom_header_modality(case.images[0])
    if header is not None:
        found = (header, "dicom")
    elif case.channel_names and (from_json := channel_modality(case.channel_names)) is not None:
        found = (from_json, "dataset.json")
    elif case.images and (from_name := bids_modality(case.images[0])) is not None:
        found = (from_name, "bids")
    catalog = [term for m in catalog_modalities if (term := vocabulary_modality(m)) is not None]
    if found is None:
        return ModalityFinding(catalog[0] if catalog else "image", "catalog", None)
    modality, source = found
    disagreement = None
    if catalog and modality not in catalog:
        disagreement = f"catalog says {', '.join(catalog)}, {WHAT_SAYS[source]} says {modality}"
    return ModalityFinding(modality, source, disagreement)
