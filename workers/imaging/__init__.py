"""Harmonising imaging data for fused bundles: layouts, readers, RAS, label unification, dedup, splits.

See BUNDLES.md (Sources, Harmonising). Each module is one idea; `harmonise.harmonise_case` chains them for one
case.
"""
