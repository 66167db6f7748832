"""BibTeX fields from what a source states: IDC's APA-style data citations and DOIs.

IDC writes each collection's citation as TCIA publishes it, e.g.
`Armato III, S. G., McLennan, G., ... Clarke, L. P. (2015). Data From LIDC-IDRI (Version 4) [Data set]. The
Cancer Imaging Archive. https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX`. `citation_fields` turns that into
author (BibTeX's `and`-separated list), year, title, version, publisher and DOI, and gives nothing it cannot
read rather than a guess.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

_APA = re.compile(
    r"^(?P<authors>.+?)\s*\((?P<year>\d{4})[a-z]?\)\.?\s*(?P<title>.+?)"
    r"(?:\s*\((?P<version>Version [^)]+)\))?(?:\s*\[Data ?set\])?\.\s*(?P<publisher>[^.]+?)\.\s*(?:https?://\S+)?\s*$"
)
# a given-name part: initials ("S. G.", "J.-P.") or a first name with initials ("Samuel G."), at most 4 words
_GIVEN = re.compile(r"^(?:[A-Z][\w'\u2019]*\.?[\s-]*){1,4}$")


def _authors(text: str) -> list[str]:
    """BibTeX names from an APA author list: `Family, Given, Family, Given, & Family, Given`, `Family, Given;
    Family, Given`, `First Last, First Last`, or one corporate author."""
    text = re.sub(r"\s*(?:\u2026|\.\.\.)\s*", ", ", text).replace("&", ",").strip()
    if ";" in text:
        return [part.strip() for part in text.split(";") if part.strip()]
    tokens = [token.strip() for token in text.split(",") if token.strip()]
    givens = tokens[1::2]
    if (
        len(tokens) >= 2
        and len(tokens) % 2 == 0
        and all((_GIVEN.match(g) and "." in g) or " " not in g for g in givens)
    ):
        return [f"{family}, {given}" for family, given in zip(tokens[::2], givens, strict=True)]
    if len(tokens) >= 2 and all(" " in token for token in tokens):
        return tokens  # "First Last" names
    return [text.rstrip(".")]  # one corporate author: a formatter keeps it whole (in braces)


def citation_fields(facts: dict[str, Any] | None) -> dict[str, str]:
    """BibTeX fields (unescaped) from a source's facts: its DOI, and what its citation text states. `author` is
    BibTeX's `and`-separated list; a single corporate author comes without a comma, so a formatter can tell it
    apart (and must brace it, or BibTeX reads its last word as a family name)."""
    if not facts:
        return {}
    fields: dict[str, str] = {}
    if facts.get("doi"):
        fields["doi"] = str(facts["doi"])
    match = _APA.match(str(facts.get("citation") or "").strip())
    if match:
        authors = _authors(match["authors"])
        if authors:
            fields["author"] = " and ".join(authors)
        fields["year"] = match["year"]
        fields["title"] = match["title"].strip()
        if match["version"]:
            fields["version"] = match["version"].removeprefix("Version ").strip()
        fields["publisher"] = match["publisher"].strip()
    return fields


# Text-mode LaTeX for the characters BibTeX or LaTeX would read as syntax. Braces become commands, not \{ and
# \}: BibTeX counts every brace, escaped or not, so an escaped brace would unbalance the entry.
_BIBTEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "{": r"\textbraceleft{}",
    "}": r"\textbraceright{}",
    "%": r"\%",
    "&": r"\&",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "^": r"\textasciicircum{}",
    "~": r"\textasciitilde{}",
}
_BIBTEX_PATTERN = re.compile("[" + re.escape("".join(_BIBTEX_SPECIAL)) + "]")


def bibtex_escape(text: str) -> str:
    return _BIBTEX_PATTERN.sub(lambda m: _BIBTEX_SPECIAL[m.group()], " ".join(text.split()))


_URL_SAFE = "".join(chr(c) for c in range(33, 127) if chr(c) not in '\\{}"')


def bibtex_url(url: str) -> str:
    """A URL safe inside a BibTeX field and \\url{}: backslashes, braces, quotes and blanks percent-encoded."""
    return quote(url.strip(), safe=_URL_SAFE)


def bibtex_entry(key: str, fields: dict[str, str]) -> str:
    """One `@misc` entry from unescaped fields (as citation_fields gives them, plus url, note...): values
    escaped, a URL or DOI percent-encoded, the title and a corporate author braced so BibTeX keeps them whole."""
    lines = []
    for name, value in fields.items():
        text = bibtex_url(value) if name in ("url", "doi") else bibtex_escape(value)
        corporate = name == "author" and "," not in value and " and " not in value
        if name == "title" or corporate:
            text = "{" + text + "}"
        lines.append(f"  {name} = {{{text}}}")
    return f"@misc{{{key},\n" + ",\n".join(lines) + "\n}"
