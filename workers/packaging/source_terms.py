"""Licences a source states in its own files: MSD / nnU-Net `dataset.json` (`licence` or `license`), BIDS
`dataset_description.json` (`License`, and for citing `Authors` and `DatasetDOI`) and LICENSE files (LICENSE,
LICENCE, COPYING, with or without .txt/.md) near the source's root.

Read while fetching, carried with the source into LICENSES.md, the report and the datacard beside the catalog's
licence. Kept as written (a dataset.json's "CC-BY-SA 4.0", a LICENSE file's first line), never mapped to an id:
what the data says about itself is quoted, not interpreted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

MAX_DEPTH = 3  # archives unpack into one or two wrapper folders (`Task03_Liver/`, `data/Task03_Liver/`)
_LICENCE_FILE = re.compile(r"^(?:LICEN[CS]E|COPYING)(?:\.(?:txt|md|rst))?$", re.IGNORECASE)
MAX_TEXT = 200


def _near_files(root: Path) -> list[Path]:
    found: list[Path] = []
    level = [root]
    for _ in range(MAX_DEPTH):
        following = []
        for folder in level:
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith((".", "__MACOSX")):
                    continue
                if entry.is_dir():
                    following.append(entry)
                elif entry.is_file():
                    found.append(entry)
        level = following
    return found


def _first_line(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                text = " ".join(line.split()).strip("#= ")
                if text:
                    return text[:MAX_TEXT]
    except OSError:
        pass
    return ""


def _json_object(path: Path) -> dict[str, object]:
    try:
        document = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def stated_citation(root: Path) -> dict[str, str]:
    """What a BIDS `dataset_description.json` near the root states for citing the data: `authors` (BibTeX's
    `and`-separated list, names as written) and `doi` (without a resolver); empty when none says."""
    for path in _near_files(root):
        if path.name != "dataset_description.json":
            continue
        document = _json_object(path)
        stated: dict[str, str] = {}
        authors = document.get("Authors")
        if isinstance(authors, list) and all(isinstance(a, str) for a in authors) and authors:
            stated["authors"] = " and ".join(" ".join(str(a).split()) for a in authors)
        doi = document.get("DatasetDOI")
        if isinstance(doi, str) and doi.strip():
            stated["doi"] = re.sub(
                r"^(?:https?://(?:dx\.)?doi\.org/|doi:)", "", doi.strip(), flags=re.IGNORECASE
            )
        if stated:
            return stated
    return {}


def stated_licences(root: Path) -> list[dict[str, str]]:
    """[{"licence": as written, "from": the file relative to `root`}], sorted by file; empty when none says."""
    stated = []
    for path in _near_files(root):
        relative = path.relative_to(root).as_posix()
        if path.name in ("dataset.json", "dataset_description.json"):
            document = _json_object(path)
            for key in ("licence", "license", "License"):
                value = document.get(key)
                if isinstance(value, str) and value.strip():
                    stated.append({"licence": " ".join(value.split())[:MAX_TEXT], "from": relative})
                    break
        elif _LICENCE_FILE.match(path.name) and (text := _first_line(path)):
            stated.append({"licence": text, "from": relative})
    return stated
