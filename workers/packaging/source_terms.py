"""Licences a source states in its own files: MSD / nnU-Net `dataset.json` (`licence` or `license`) and LICENSE
files (LICENSE, LICENCE, COPYING, with or without .txt/.md) near the source's root.

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


def stated_licences(root: Path) -> list[dict[str, str]]:
    """[{"licence": as written, "from": the file relative to `root`}], sorted by file; empty when none says."""
    stated = []
    for path in _near_files(root):
        relative = path.relative_to(root).as_posix()
        if path.name == "dataset.json":
            try:
                document = json.loads(path.read_text(encoding="utf-8", errors="replace"))
            except (OSError, ValueError):
                continue
            if not isinstance(document, dict):
                continue
            for key in ("licence", "license"):
                value = document.get(key)
                if isinstance(value, str) and value.strip():
                    stated.append({"licence": " ".join(value.split())[:MAX_TEXT], "from": relative})
                    break
        elif _LICENCE_FILE.match(path.name) and (text := _first_line(path)):
            stated.append({"licence": text, "from": relative})
    return stated
