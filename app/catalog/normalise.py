"""Turning one survey row's free text into controlled-vocabulary facts. Pure functions, no database."""

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from app.common.vocabularies import ACCESS, ANATOMY, DIM, MODALITY, NON_IMAGE_DICOM, TASK, host_in

# The survey row keys that state facts about a dataset; rows equal on all of these are one dataset.
FACT_KEYS = ("name", "url", "year", "dim", "modality", "structure", "samples", "label", "task", "diseases")

_UNKNOWN = {"", "na", "n/a", "-", "none", "no", "unknown", "?"}
_SPLIT = re.compile(r"\s*(?:[,/;+&|]|\band\b)\s*", re.IGNORECASE)
# Diseases are phrases: 'head and neck cancer' and 'lung and colon cancer' are one each, so only list marks split
_DISEASE_SPLIT = re.compile(r"\s*[,;|]\s*")
# 'Acute/ subacute ischemic stroke': a modifier before a slash qualifies the phrase after it
_MODIFIERS = {"acute", "subacute", "chronic", "benign", "malignant", "primary", "secondary", "early", "late"}


@dataclass
class Normalised:
    """The facts read from one row, plus what could not be read (for quality flags and the import report)."""

    dims: list[str] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)
    anatomies: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    diseases: list[str] = field(default_factory=list)
    images: int | None = None
    count_status: str = "ok"  # ok, missing, zero, unparseable, approximate
    year: int | None = None
    access: str = "unknown"
    host: str = "none"
    unmatched: dict[str, list[str]] = field(default_factory=dict)
    # the row's modality says only 'Multi' (the survey's table section stood in for the dataset's own value)
    modality_multi: bool = False
    # abbreviations in the task column that stand for more than one task ('reg', 'qa'), decided per dataset
    # from evidence (app/catalog/evidence.py), not per row
    task_abbreviations: list[str] = field(default_factory=list)


def clean_text(text: str | None) -> str:
    """Strip zero-width characters and odd spacing that the survey tables carry (e.g. '\u200d OCT')."""
    if text is None:
        return ""
    text = unicodedata.normalize("NFKC", text).replace("\u200d", "").replace("\u200b", "")
    return re.sub(r"\s+", " ", text).strip()


def clean_url(text: str | None) -> str:
    """Undo the LaTeX escapes the survey's table carries ('\\#', '\\%20') and encode stray spaces."""
    url = re.sub(r"\\([#%_&])", r"\1", clean_text(text))
    return url.replace(" ", "%20")


def is_unknown(text: str) -> bool:
    return clean_text(text).lower().rstrip(".") in _UNKNOWN


def split_terms(text: str) -> list[str]:
    """Split free text like 'CT/ MR, PET' or 'Seg, Det, Cls' into parts, dropping '...' truncations."""
    parts = _SPLIT.split(clean_text(text).replace("...", "").replace("\u2026", ""))
    return [p.strip(" .()'\"") for p in parts if p.strip(" .()'\"")]


def parse_count(text: str) -> tuple[int | None, str]:
    """'2.7k' -> 2700, '1.5M' -> 1500000, '1,993' -> 1993, '200+' -> 200 (approximate), 'NA' -> unknown.

    Texts like '303,001 images & 450,724 VQA entries' count their first number (the images).
    """
    raw = clean_text(text)
    if is_unknown(raw):
        return None, "missing"
    match = re.match(r"^~?\s*(\d[\d,]*(?:\.\d+)?)\s*([kKmM])?\s*(\+)?", raw)
    if not match:
        return None, "unparseable"
    number = float(match.group(1).replace(",", ""))
    number *= {"k": 1_000, "m": 1_000_000}.get((match.group(2) or "").lower(), 1)
    value = round(number)
    if value == 0:
        return 0, "zero"
    return value, "approximate" if match.group(3) else "ok"


def parse_year(text: str) -> int | None:
    match = re.search(r"\b(19[5-9]\d|20\d\d)\b", clean_text(text))
    return int(match.group(1)) if match else None


def size_bucket(images: int | None) -> str:
    if images is None:
        return "unknown"
    for limit, bucket in ((100, "lt100"), (1_000, "100-1k"), (10_000, "1k-10k"), (100_000, "10k-100k")):
        if images < limit:
            return bucket
    return "100k+"


def host_of(url: str | None) -> str:
    netloc = urlparse(clean_url(url)).netloc.lower()
    if not netloc:
        return "none"
    return host_in(netloc) or "other"


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def resolve_dims(text: str) -> tuple[list[str], list[str]]:
    found, unmatched = [], []
    for part in split_terms(text):
        if part.lower() == "text":  # '2D+Text': image-text pairs, still 2D images
            continue
        term = DIM.resolve(part)
        (found.append(term) if term else unmatched.append(part))
    return _unique(found), unmatched


def resolve_modalities(text: str) -> tuple[list[str], list[str]]:
    if is_unknown(text):
        return [], []
    whole = MODALITY.resolve(text)
    if whole:
        return [whole], []
    found, unmatched = [], []
    for part in split_terms(text):
        if part.lower() in NON_IMAGE_DICOM:
            continue
        term = MODALITY.resolve(part) or MODALITY.resolve(re.sub(r"\s*\(.*$", "", part))
        (found.append(term) if term else unmatched.append(part))
    return _unique(found), unmatched


def resolve_anatomies(text: str) -> tuple[list[str], list[str]]:
    if is_unknown(text):
        return [], []
    whole = ANATOMY.resolve(text) or ANATOMY.resolve(re.sub(r"\s*\(.*\)$", "", text))
    if whole:
        return [whole], []
    found, unmatched = [], []
    for part in split_terms(text):
        if part.lower() in {"multi", "organs"}:
            continue
        term = ANATOMY.resolve(part) or ANATOMY.resolve(re.sub(r"\s*\(.*$", "", part))
        (found.append(term) if term else unmatched.append(part))
    return _unique(found), unmatched


def resolve_tasks(text: str) -> tuple[list[str], list[str], list[str]]:
    """Task ids, unmatched parts, and the ambiguous abbreviations ('reg', 'qa') left for the evidence to decide."""
    if is_unknown(text):
        return [], [], []
    found, unmatched, ambiguous = [], [], []
    for part in split_terms(text):
        meanings = TASK.meanings(part)
        if len(meanings) > 1:
            ambiguous.append(part.lower())
            continue
        (found.append(meanings[0]) if meanings else unmatched.append(part))
    return _unique(found), unmatched, _unique(ambiguous)


def split_diseases(text: str) -> list[str]:
    """Disease phrases as written: split on list marks and on slashes between alternatives, never on 'and'
    ('Head and Neck Cancer' is one phrase); 'Acute/ subacute ischemic stroke' stays one phrase."""
    cleaned = clean_text(text).replace("...", "").replace("\u2026", "")
    if is_unknown(cleaned):
        return []
    phrases: list[str] = []
    for item in _DISEASE_SPLIT.split(cleaned):
        pieces = [p.strip() for p in item.split("/")]
        if len(pieces) == 2 and pieces[0].lower() in _MODIFIERS and len(pieces[1].split()) > 1:
            pieces = [f"{pieces[0]}/{pieces[1]}"]
        phrases.extend(pieces)
    return _unique([p.strip(" .'\"") for p in phrases if p.strip(" .'\"") and not is_unknown(p)])


# Tissues found all over the body say nothing about where a dataset's images were taken.
_TISSUES = {
    "cell",
    "non_anatomical",
    "whole_body",
    "lymphatic",
    "vessel",
    "bone",
    "soft_tissue",
    "nerve",
    "blood",
}


def anatomy_terms_in(text: str) -> list[str]:
    """Organ-level anatomy ids named anywhere in a free-text field (used to check the disease column)."""
    words = re.findall(r"[a-z]+", clean_text(text).lower())
    found: list[str] = []
    used: set[int] = set()
    for size in (3, 2, 1):
        for i in range(len(words) - size + 1):
            span = set(range(i, i + size))
            if span & used:
                continue
            term = ANATOMY.resolve(" ".join(words[i : i + size]))
            if term:
                used |= span
                if term not in _TISSUES:
                    found.append(term)
    return _unique(found)


def normalise_row(row: dict[str, Any]) -> Normalised:
    result = Normalised()
    result.dims, unmatched_dims = resolve_dims(row.get("dim") or "")
    result.modalities, unmatched_mod = resolve_modalities(row.get("modality") or "")
    if clean_text(row.get("modality")).lower() == "multi":
        result.modality_multi, unmatched_mod = True, []
    result.anatomies, unmatched_anat = resolve_anatomies(row.get("structure") or "")
    result.tasks, unmatched_task, result.task_abbreviations = resolve_tasks(row.get("task") or "")
    result.diseases = split_diseases(row.get("diseases") or "")
    result.images, result.count_status = parse_count(str(row.get("samples") or ""))
    result.year = parse_year(str(row.get("year") or ""))
    result.access = ACCESS.resolve(row.get("access") or "") or "unknown"
    result.host = host_of(row.get("url"))
    result.unmatched = {
        key: values
        for key, values in (
            ("dim", unmatched_dims),
            ("modality", unmatched_mod),
            ("structure", unmatched_anat),
            ("task", unmatched_task),
        )
        if values
    }
    return result


def fact_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """Rows equal on every fact (after cleaning stray characters) are the same dataset listed twice."""
    return tuple(clean_text(str(row.get(k))) if k != "label" else bool(row.get(k)) for k in FACT_KEYS)


def slugify(text: str) -> str:
    text = unicodedata.normalize("NFKD", clean_text(text)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:120] or "dataset"


def fact_hash(key: tuple[Any, ...]) -> str:
    return hashlib.sha1(repr(key).encode()).hexdigest()[:6]


def aliases_of(name: str) -> list[str]:
    """'Medical Segmentation Decathlon (MSD)' is also found as 'MSD' and without the parenthesis."""
    aliases = []
    inner = re.findall(r"\(([^)]+)\)", name)
    outer = re.sub(r"\s*\([^)]*\)", "", name).strip()
    if inner and outer:
        aliases.append(outer)
        aliases.extend(i.strip() for i in inner if i.strip().lower() not in {"duplicate"})
    return _unique([a for a in aliases if a and a != name])
