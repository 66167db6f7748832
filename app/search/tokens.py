"""Words as search compares them: one normal form for the catalog's text and for what people type.

A word is folded (lower case, accents dropped), spelt one way (British and American spellings meet, a few
common non-English words become their English term), and given a light plural rule. A word that mixes letters
and digits ("KiTS19", "BraTS2021", "covid-19") also yields its letter and digit runs, so "kits19", "kits 19"
and "kits-19" share tokens. Edit distances here are optimal string alignment (a swap of two neighbours counts
as one edit), with a budget that grows with word length.
"""

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

from app.search.concepts import SPELLINGS, TRANSLATIONS

_RUN = re.compile(r"[a-z0-9]+")
_ALPHA_DIGIT = re.compile(r"[a-z]+|[0-9]+")

# Words of search phrasing that say nothing about which dataset is meant: they add to a score when a record
# has them but a record without them is not excluded ("brats challenge", "lung ct dataset").
_ENGLISH_SOFT = "a an and the of for in on with by to from dataset data database set image imaging challenge"
_ENGLISH_SOFT += " benchmark collection study public open"
# the commonest function words of French, German, Spanish and Italian ("cancer du poumon")
_OTHER_SOFT = "du de la le les des et en der die das und mit von el los las del y con il di e"
SOFT_WORDS = frozenset(_ENGLISH_SOFT.split() + _OTHER_SOFT.split())


def fold(text: str) -> str:
    """Lower case without accents or ligatures: 'Rétine' -> 'retine', 'Straße' -> 'strasse'."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@lru_cache(maxsize=65536)
def normal(run: str) -> str:
    """One folded alphanumeric run in its normal form: one spelling, and a final plural 's' dropped."""
    run = SPELLINGS.get(run, run)
    if len(run) > 3 and run.endswith("s") and not run.endswith(("ss", "us", "is")) and not run[-2].isdigit():
        run = SPELLINGS.get(run[:-1], run[:-1])
    return run


def split_runs(text: str) -> list[str]:
    """The folded alphanumeric runs of a text, in order ('KiTS-19 (2019)' -> ['kits', '19', '2019'])."""
    return _RUN.findall(fold(text).replace("'", ""))


def query_words(text: str) -> list[str]:
    """What a person typed, as normal words in order; non-English words become their English term (which
    may be two words: 'Hirntumor' -> 'brain', 'tumor')."""
    return [normal(part) for run in split_runs(text) for part in TRANSLATIONS.get(run, run).split()]


def document_tokens(text: str, *, name: bool = False) -> list[tuple[str, str]]:
    """Every token a record's text is found by, each with the folded form it came from: each run's normal
    form, the letter and digit parts of a run that mixes them ('kits19' -> 'kits', '19'), and for a name of
    two to four runs, the name written as one word ('LIDC-IDRI' -> 'lidcidri')."""
    runs = split_runs(text)
    tokens: list[tuple[str, str]] = []
    for run in runs:
        tokens.append((normal(run), run))
        parts = _ALPHA_DIGIT.findall(run)
        if len(parts) > 1:
            tokens.extend((normal(part), part) for part in parts)
    if name and 1 < len(runs) <= 4:
        tokens.append((normal("".join(runs)), "".join(runs)))
    return tokens


def joined(text: str) -> str:
    """A name with every separator removed, for exact-name comparison ('KiTS 19' and 'kits-19' -> 'kits19')."""
    return "".join(split_runs(text))


def edit_budget(word: str) -> int:
    """How many edits a misspelling of `word` may have: none up to 3 letters, one up to 7, two beyond."""
    if len(word) <= 3 or word.isdigit():
        return 0
    return 1 if len(word) <= 7 else 2


def edit_distance(a: str, b: str, limit: int) -> int:
    """Optimal string alignment distance between a and b, or limit + 1 if it exceeds `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                value = min(value, previous2[j - 2] + 1)
            current[j] = value
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1] if previous[-1] <= limit else limit + 1


def deletions(word: str, depth: int) -> set[str]:
    """Every string made by deleting up to `depth` letters of `word` (the keys of a deletion index: two words
    within k edits share a key made by at most k deletions from each)."""
    found = {word}
    frontier = {word}
    for _ in range(depth):
        frontier = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))} - found
        found |= frontier
    return found


def unique(words: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(words))
