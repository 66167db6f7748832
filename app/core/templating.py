"""The one Jinja2 environment shared by every domain's pages."""

from pathlib import Path
from urllib.parse import urlencode

from fastapi.templating import Jinja2Templates

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.filters["urlencode_pairs"] = lambda pairs: urlencode(list(pairs))


def thousands(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


templates.env.filters["thousands"] = thousands


def human_bytes(size: int | None) -> str:
    """1234567 -> '1.2 MB' (decimal units, as download tools, disks and hosts count)."""
    if size is None:
        return "unknown"
    units = ("B", "kB", "MB", "GB", "TB")
    value, index = float(size), 0
    while value >= 1000 and index < len(units) - 1:
        value /= 1000
        index += 1
    return f"{size} B" if index == 0 else f"{value:.1f} {units[index]}"


templates.env.filters["human_bytes"] = human_bytes
