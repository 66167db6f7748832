"""The vocabulary data files: well-formed, loaded as the module names, shipped with the package."""

import json
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from app.common import vocabularies
from app.common.vocabularies import (
    ALL,
    ANATOMY,
    HOST,
    MODALITY,
    NON_IMAGE_DICOM,
    VOCABULARY_DIR,
    Term,
    Vocabulary,
    VocabularyFileError,
    load_vocabulary,
)

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(VOCABULARY_DIR.glob("*.json"))


def test_one_file_per_vocabulary() -> None:
    assert {path.stem for path in FILES} == set(ALL)
    assert list(ALL) == [
        "modality", "anatomy", "task", "dim", "access", "labeled", "size", "host", "licence", "fetch", "quality",
    ]  # fmt: skip


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.stem)
def test_file_invariants(path: Path) -> None:
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["kind"] == path.stem
    terms = raw["terms"]
    ids = [term["id"] for term in terms]
    assert len(ids) == len(set(ids)), "duplicate term ids"
    parents = {term["id"]: term.get("parent") for term in terms}
    for term_id, parent in parents.items():
        assert parent is None or parent in parents, f"{term_id}: parent {parent!r} is not a term"
        seen = {term_id}
        while parent is not None:
            assert parent not in seen, f"parent cycle through {term_id}"
            seen.add(parent)
            parent = parents[parent]
    for term in terms:
        if "code" in term and path.stem != "host":
            assert term.get("code_system"), f"{term['id']}: a code needs its code system"
        if "code_system" in term:
            assert term.get("code"), f"{term['id']}: a code system without a code"
    # the loaded vocabulary keeps the file's order: it is the display order of facets
    assert [term.id for term in ALL[path.stem].terms] == ids
    assert load_vocabulary(path.stem).terms == ALL[path.stem].terms


def test_host_codes_are_hostname_suffixes() -> None:
    # a host's code is matched against URLs, not looked up in a code system
    for term in HOST.terms:
        assert term.code_system is None
        if term.code is not None:
            assert " " not in term.code and "/" not in term.code and term.code == term.code.lower()


def test_module_names_keep_their_types() -> None:
    for name, kind in (("MODALITY", "modality"), ("ANATOMY", "anatomy"), ("HOST", "host")):
        vocabulary = getattr(vocabularies, name)
        assert isinstance(vocabulary, Vocabulary)
        assert ALL[kind] is vocabulary
    for vocabulary in ALL.values():
        assert all(isinstance(term, Term) and isinstance(term.synonyms, tuple) for term in vocabulary.terms)
    assert isinstance(NON_IMAGE_DICOM, set)
    assert {"seg", "rtstruct"} <= NON_IMAGE_DICOM


def test_known_terms_resolve_as_before() -> None:
    for spelling in ("MRI", "mri", "magnetic resonance"):
        assert MODALITY.resolve(spelling) == "MR"
    assert MODALITY.resolve("CXR") == "XR"
    assert MODALITY.term("XR").code == "DX"
    assert MODALITY.term("MR").code_system == "DICOM"
    assert ANATOMY.resolve("Chest") == "thorax"
    assert {"lung", "heart"} <= set(ANATOMY.descendants("thorax"))
    assert "breast" not in ANATOMY.descendants("thorax")  # chest searches must not return mammography
    assert ANATOMY.ancestors("lung") == ["thorax", "whole_body"]
    assert ANATOMY.term("brain").code == "UBERON:0000955"
    assert ALL["task"].resolve("seg") == "segmentation"
    assert ALL["labeled"].resolve("yes") == "true"
    assert HOST.resolve("hf") == "huggingface"
    assert HOST.term("tcia").code == "cancerimagingarchive.net"
    assert ALL["licence"].resolve("public domain") == "CC0-1.0"
    assert ALL["size"].resolve("huge") == "100k+"
    assert ALL["quality"].term("url_shared").description


def write(directory: Path, kind: str, terms: list[dict[str, object]]) -> None:
    (directory / f"{kind}.json").write_text(json.dumps({"kind": kind, "label": kind, "terms": terms}))


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ([{"id": "a", "label": "A"}, {"id": "a", "label": "A again"}], "duplicate term id 'a'"),
        ([{"id": "a", "label": "A", "parent": "b"}], "parent 'b', which is not a term"),
        ([{"id": "a", "label": "A", "synonym": ["x"]}], "synonym"),
        ([{"id": "a", "label": "A", "parent": "b"}, {"id": "b", "label": "B", "parent": "a"}], "cycle"),
        ([{"id": "a", "label": 1}], "label"),
    ],
    ids=["duplicate-id", "unknown-parent", "unknown-field", "cycle", "wrong-type"],
)
def test_broken_files_are_errors_naming_the_file(
    tmp_path: Path, terms: list[dict[str, object]], message: str
) -> None:
    write(tmp_path, "colours", terms)
    with pytest.raises(VocabularyFileError, match=r"colours\.json") as error:
        load_vocabulary("colours", tmp_path)
    assert message in str(error.value)


def test_missing_file_and_wrong_kind_are_errors(tmp_path: Path) -> None:
    with pytest.raises(VocabularyFileError, match=r"shapes\.json"):
        load_vocabulary("shapes", tmp_path)
    write(tmp_path, "colours", [])
    (tmp_path / "colours.json").rename(tmp_path / "shapes.json")
    with pytest.raises(VocabularyFileError, match="expected 'shapes'"):
        load_vocabulary("shapes", tmp_path)


def test_files_ship_with_the_package() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "app"
    ]
    for path in FILES:
        relative = path.relative_to(ROOT / "app").as_posix()
        # setuptools globs do not cross directories: "data/*.json" misses data/vocabularies/
        assert any(
            fnmatch(relative, pattern) and relative.count("/") == pattern.count("/") for pattern in patterns
        )
