"""Packaging of fused bundles: harmonised cases in, one self-describing, checksummed bundle folder out.

See BUNDLES.md ("Packaging"). Entry point: `build_bundle`.
"""

from workers.packaging.bundle import BundleResult, BundleSpec, build_bundle
from workers.packaging.cases import HarmonisedCase, LabelConcept, LabelTable, SkippedItem, SourceDataset

__all__ = [
    "BundleResult",
    "BundleSpec",
    "HarmonisedCase",
    "LabelConcept",
    "LabelTable",
    "SkippedItem",
    "SourceDataset",
    "build_bundle",
]
