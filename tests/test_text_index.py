"""The in-memory text index against brute force: tokens, edit distances, the misspelling candidates, and the
datasets a word finds (exact and prefix) compared with a scan of every record's text."""

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.search.tokens import deletions, document_tokens, edit_budget, edit_distance, joined, query_words

letters = st.text(alphabet="abcde", min_size=0, max_size=9)


def osa_reference(a: str, b: str) -> int:
    """Optimal string alignment distance, the textbook full-table form."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


@settings(max_examples=400)
@given(letters, letters, st.integers(min_value=0, max_value=3))
def test_bounded_edit_distance_agrees_with_the_full_table(a: str, b: str, limit: int) -> None:
    full = osa_reference(a, b)
    assert edit_distance(a, b, limit) == (full if full <= limit else limit + 1)


@settings(max_examples=400)
@given(letters.filter(lambda w: len(w) > 3), st.data())
def test_a_one_edit_typo_shares_a_deletion_key_with_its_word(word: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(min_value=0, max_value=len(word) - 1))
    c = data.draw(st.sampled_from("abcdez"))
    typos = {word[:i] + word[i + 1 :], word[:i] + c + word[i:], word[:i] + c + word[i + 1 :]}
    if i + 1 < len(word):
        typos.add(word[:i] + word[i + 1] + word[i] + word[i + 2 :])
    for typo in typos:
        assert edit_distance(word, typo, 1) <= 1
        assert deletions(word, 1) & deletions(typo, 1), (word, typo)


def test_names_with_letters_and_digits_share_tokens_written_apart() -> None:
    kits = {token for token, _ in document_tokens("KiTS19")}
    assert {"kits19", "kit", "19"} <= kits
    assert set(query_words("kits 19")) <= kits and set(query_words("kits-19")) <= kits
    assert joined("KiTS-19") == joined("kits 19") == joined("KITS19") == "kits19"
    assert query_words("Tumour oesophagus Lunge") == ["tumor", "esophagus", "lung"]
    assert [edit_budget(w) for w in ("ct", "lung", "kidney", "segmentation")] == [0, 1, 1, 2]


def _record_tokens(row: Any, curated: list[str]) -> set[str]:
    from app.common.vocabularies import ALL

    names = [row.name, *(row.aliases or []), *curated]
    found = {token for text in names for token, _ in document_tokens(text, name=True)}
    texts = [*(row.diseases or []), row.section or "", row.organisation or ""]
    texts.append(str(row.year) if row.year else "")
    for kind, values in (("modality", row.modalities), ("anatomy", row.anatomy_closure), ("task", row.tasks),
                         ("dim", row.dims)):  # fmt: skip
        for value in values or []:
            texts.append(value)
            if value in ALL[kind]:
                term = ALL[kind].term(value)
                texts += [term.label, *term.synonyms]
    host = ALL["host"]
    texts += [
        row.host,
        *((host.term(row.host).label, *host.term(row.host).synonyms) if row.host in host else ()),
    ]
    return found | {token for text in texts for token, _ in document_tokens(text)}


_scans: dict[Any, tuple[list[Any], dict[int, set[str]]]] = {}


def _scan(session: Session) -> tuple[list[Any], dict[int, set[str]]]:
    """Every record and its tokens, read once per test database."""
    from app.catalog.models import Dataset
    from app.catalog.service import canonical_slug
    from app.search.concepts import ALIASES

    key = session.get_bind().engine.url
    if key not in _scans:
        rows = list(session.execute(select(Dataset).order_by(Dataset.id)).scalars().all())
        curated: dict[str, list[str]] = {}
        for entry in ALIASES:
            for slug in entry.slugs:
                curated.setdefault(canonical_slug(session, slug) or slug, []).extend(entry.aliases)
        _scans[key] = rows, {row.id: _record_tokens(row, curated.get(row.slug, [])) for row in rows}
    return _scans[key]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_word_finds_exactly_the_records_whose_text_has_it_or_a_word_it_begins(
    session: Session, data: st.DataObject
) -> None:
    """Plain words (no concept, no soft word) that find at least three datasets: the index's answer equals
    a scan over the records, each record's text tokenised on its own."""
    from app.catalog.service import catalog_version
    from app.search.text_index import current_text_index
    from app.search.text_query import PREFIX_LIMIT, _phrase_words, evaluate
    from app.search.tokens import SOFT_WORDS, normal

    index = current_text_index(session, catalog_version(session))
    rows, tokens = _scan(session)
    pool = sorted(
        w for w in index.vocabulary if w.isalpha() and w not in _phrase_words() and w not in SOFT_WORDS
    )
    word = data.draw(st.sampled_from(pool))
    prefix = data.draw(st.booleans()) and len(word) > 4
    q = word[: max(3, len(word) - 2)] if prefix else word
    if (
        len(index.prefixed(q, PREFIX_LIMIT + 1)) > PREFIX_LIMIT
        or q in _phrase_words()
        or q in SOFT_WORDS
        or normal(q) != q
    ):
        # a prefix of many words is widened to its most frequent ones only; 'covid' is a concept; a prefix
        # that reads as a plural is searched as its singular ('subs' of 'subset' is 'sub')
        q = word

    def has(record_tokens: set[str]) -> bool:
        return q in record_tokens or (len(q) >= 3 and any(t.startswith(q) for t in record_tokens))

    expected = {row.id for row in rows if has(tokens[row.id])}
    found = set(index.catalog.ids[evaluate(index, q).positions].tolist())
    if len(expected) >= 3:  # fewer: misspellings may add records, tested apart
        assert found == expected, q
    else:
        assert expected <= found, q
