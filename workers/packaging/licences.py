"""LICENSES.md and CITATION.bib, and the terms that bind a bundle mixing several licences.

A fused bundle is an adaptation of each part, so the most restrictive terms of any part reach the whole:
one NonCommercial source makes the bundle non-commercial, one ShareAlike source obliges the same licence on
derivatives of that part, NoDerivatives forbids distributing the harmonised copy at all, and an unknown licence
means nobody can promise anything. The rules read the SPDX-style id (CC-BY-NC-SA-4.0 and friends).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from workers.packaging.cases import SourceDataset

LICENSES_NAME = "LICENSES.md"
CITATION_NAME = "CITATION.bib"

_OPEN_WITHOUT_CONDITIONS = {"CC0-1.0", "PDDL-1.0", "PUBLIC-DOMAIN"}
_KNOWN_PERMISSIVE = {
    "CC-BY-3.0",
    "CC-BY-4.0",
    "ODC-BY-1.0",
    "MIT",
    "APACHE-2.0",
    "BSD-3-CLAUSE",
    "BSD-2-CLAUSE",
}


@dataclass(frozen=True)
class CombinedTerms:
    non_commercial: tuple[str, ...]  # slugs whose licence is NonCommercial
    share_alike: tuple[str, ...]
    no_derivatives: tuple[str, ...]
    unknown: tuple[str, ...]  # licence not recognised: check by hand
    attribution: tuple[str, ...]

    def statements(self) -> list[str]:
        """What binds the whole bundle, one sentence each, most restrictive first."""
        out = []
        if self.no_derivatives:
            out.append(
                "NoDerivatives ("
                + ", ".join(self.no_derivatives)
                + "): harmonising is adapting; this bundle "
                "must not be redistributed with these parts."
            )
        if self.unknown:
            out.append(
                "Unknown licence ("
                + ", ".join(self.unknown)
                + "): terms could not be read; check them before "
                "any use beyond private research."
            )
        if self.non_commercial:
            out.append(
                "NonCommercial ("
                + ", ".join(self.non_commercial)
                + "): the bundle as a whole may be used for "
                "non-commercial purposes only."
            )
        if self.share_alike:
            out.append(
                "ShareAlike (" + ", ".join(self.share_alike) + "): derivatives of these parts must be shared "
                "under the same licence."
            )
        if self.attribution:
            out.append("Attribution: cite every source listed below (CITATION.bib).")
        if not out:
            out.append("No conditions: every part is public domain or CC0.")
        return out


def _normalised_id(licence: str) -> str:
    return re.sub(r"\s+", "-", licence.strip()).upper()


def combined_terms(sources: list[SourceDataset]) -> CombinedTerms:
    nc, sa, nd, unknown, by = [], [], [], [], []
    for source in sorted(sources, key=lambda s: s.slug):
        spdx = _normalised_id(source.licence)
        parts = set(spdx.split("-"))
        if spdx in _OPEN_WITHOUT_CONDITIONS:
            continue
        recognised = spdx in _KNOWN_PERMISSIVE or spdx.startswith("CC-BY")
        if not recognised:
            unknown.append(source.slug)
            continue
        by.append(source.slug)
        if "NC" in parts:
            nc.append(source.slug)
        if "SA" in parts:
            sa.append(source.slug)
        if "ND" in parts:
            nd.append(source.slug)
    return CombinedTerms(tuple(nc), tuple(sa), tuple(nd), tuple(unknown), tuple(by))


def licences_markdown(bundle_name: str, sources: list[SourceDataset]) -> str:
    terms = combined_terms(sources)
    lines = [f"# Licences of {bundle_name}", "", "## Terms that bind the whole bundle", ""]
    lines += [f"- {statement}" for statement in terms.statements()]
    lines += [
        "",
        "## Sources",
        "",
        "The catalog's licence of each source, and the licences the source's own files or its host state (each "
        "with where it was read). Where they differ, the terms the source itself states are the ones to read.",
        "",
        "| Source | Title | Licence (catalog) | Stated by the source | Licence text | Dataset | DOI |",
        "|---|---|---|---|---|---|---|",
    ]
    for source in sorted(sources, key=lambda s: s.slug):
        stated = "; ".join(f"{licence} ({where})" for licence, where in source.stated_licences) or "-"
        cells = [
            source.slug,
            source.title,
            source.licence,
            stated,
            source.licence_url,
            source.url,
            source.doi,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _bibtex_key(slug: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", slug)


# The survey whose catalog chose the sources: cited in every bundle (its data is MIT-licensed and asks for it).
SURVEY_KEY = "imagingx_survey"
SURVEY_BIBTEX = (
    "@article{imagingx_survey,\n"
    "  title = {{Project Imaging-X: A Survey of 1000+ Open-Access Medical Imaging Datasets for Foundation Model "
    "Development}},\n"
    "  author = {Deng and others},\n"
    "  journal = {arXiv preprint arXiv:2603.27460},\n"
    "  eprint = {2603.27460},\n"
    "  archivePrefix = {arXiv},\n"
    "  year = {2026},\n"
    "  url = {https://arxiv.org/abs/2603.27460}\n"
    "}"
)


def source_bibtex(source: SourceDataset) -> str:
    """The source's own BibTeX when it states one (an IDC data citation); otherwise an entry from what is
    known of it: title, and where any source states them, authors, year and DOI, with its URL and licence."""
    if source.citation_bibtex.strip():
        return source.citation_bibtex.strip()
    from app.sources.citations import bibtex_entry

    fields = {"title": source.title}
    if source.authors:
        fields["author"] = source.authors
    if source.year:
        fields["year"] = source.year
    if source.doi:
        fields["doi"] = source.doi
    if source.url:
        fields["url"] = source.url
    fields["note"] = f"Licence: {source.licence}"
    return bibtex_entry(_bibtex_key(source.slug), fields)


def citation_bibtex(sources: list[SourceDataset]) -> str:
    """One entry per source (source_bibtex), then the survey's."""
    entries = [source_bibtex(source) for source in sorted(sources, key=lambda s: s.slug)]
    return "\n\n".join([*entries, SURVEY_BIBTEX]) + "\n"


def write_licences(bundle_name: str, sources: list[SourceDataset], root: Path) -> None:
    (root / LICENSES_NAME).write_text(licences_markdown(bundle_name, sources), encoding="utf-8")
    (root / CITATION_NAME).write_text(citation_bibtex(sources), encoding="utf-8")
