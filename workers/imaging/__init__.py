"""Harmonising imaging data for fused bundles: layouts, readers, RAS, label unification, dedup, splits.

See docs/bundles.md (Sources and layouts, Harmonising). Each module is one idea; `harmonise.harmonise_case` chains them for one
case.
"""
