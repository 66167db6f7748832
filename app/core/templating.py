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
