"""Every data file the app reads ships with it: each file under app/data/ matches a package-data pattern of
pyproject.toml, so an installed (not editable) portal finds its vocabularies, merges, labels and lexicons."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_file_under_app_data_is_declared_as_package_data() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["app"]
    app = REPO / "app"
    files = [path for path in (app / "data").rglob("*") if path.is_file() and path.name != "__init__.py"]
    assert files
    undeclared = [
        str(path.relative_to(app))
        for path in files
        if not any(path.relative_to(app).match(pattern) for pattern in patterns)
    ]
    assert not undeclared, f"add to [tool.setuptools.package-data] in pyproject.toml: {undeclared}"
