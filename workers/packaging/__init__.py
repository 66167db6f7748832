"""Packaging of fused bundles: harmonised cases in, one self-describing, checksummed bundle folder out.

See docs/bundles.md ("Packaging"). Entry point: `build_bundle`.

The names below load on first use: the web process imports `app.common.archive` to serve downloads and
should not pay for numpy, SimpleITK and pyarrow, which only the packaging itself needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BundleResult": "workers.packaging.bundle",
    "BundleSpec": "workers.packaging.bundle",
    "build_bundle": "workers.packaging.bundle",
    "HarmonisedCase": "workers.packaging.cases",
    "LabelConcept": "workers.packaging.cases",
    "LabelTable": "workers.packaging.cases",
    "SkippedItem": "workers.packaging.cases",
    "SourceDataset": "workers.packaging.cases",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
