"""The search lexicon data files (app/data/search/): valid, consistent, and the hierarchy's descendants equal a
brute-force transitive closure."""

import json

import pytest
from pydantic import ValidationError

from app.search.concepts import ALIASES, CONCEPTS, DATA_DIR, SPELLINGS, TRANSLATIONS, ConceptFile
from app.search.tokens import fold


def test_descendants_are_the_transitive_closure_of_parents() -> None:
    parent = {c.id: c.parent for c in CONCEPTS.entries}
    for concept in CONCEPTS.entries:
        below = set()
        for other in CONCEPTS.entries:
            up = other.parent
            while up is not None:
                if up == concept.id:
                    below.add(other.id)
                    break
                up = parent[up]
        assert set(CONCEPTS.descendants(concept.id)) == below, concept.id
    assert {"glioma", "glioblastoma", "meningioma", "brain_metastasis"} <= set(
        CONCEPTS.descendants("brain_tumor")
    )


def test_keys_are_folded_and_maps_do_not_chain() -> None:
    for mapping in (SPELLINGS, TRANSLATIONS):
        assert all(key == fold(key) and key.isalnum() for key in mapping)
    assert not set(SPELLINGS.values()) & set(SPELLINGS), "a spelling maps to another variant"
    assert all(slugs and aliases for slugs, aliases in ((e.slugs, e.aliases) for e in ALIASES))


def test_a_concept_file_with_an_unknown_parent_is_refused_with_its_name() -> None:
    data = json.loads((DATA_DIR / "concepts.json").read_text(encoding="utf-8"))
    data["concepts"].append({"id": "orphan", "label": "Orphan", "parent": "nowhere", "phrases": ["orphan"]})
    with pytest.raises(ValidationError, match="nowhere"):
        ConceptFile.model_validate(data)
