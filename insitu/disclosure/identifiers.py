"""Finding the site's identifiers and dates in any text, however it is disguised.

Text is normalised before it is searched: Unicode NFKC (full-width digits,
ligatures), invisible and combining characters removed, common look-alikes
(Cyrillic and Greek letters that look Latin) folded, case folded. Pseudonyms
and UIDs are then searched as substrings of the text with every separator
removed (so ``SUB_0003A9``, ``sub0003a9`` and ``xsub-0003a9y`` all match
``sub-0003a9``), and dates of the site's data are recognised in the common
written formats (ISO, day-first and month-first with any separator, two-digit
years, month names and abbreviations).
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["IdentifierMatcher", "find_dates", "find_uids", "normalise"]

# Cyrillic and Greek letters that look like Latin ones (the common confusables).
_CONFUSABLES = str.maketrans(
    "АВЕКМНОРСТУХаеорсуххіјѕԁһӏԛԝΑΒΕΖΗΙΚΜΝΟΡΤΥΧαοιкνρτυχϲ",
    "ABEKMHOPCTYXaeopcyxxijsdhlqwABEZHIKMNOPTYXaoikvptuxc",
)
# In the compact form, digits and letters that look alike are folded too.
_SKELETON = str.maketrans("oli", "011")
_UID = re.compile(r"(?<![\d.])(?:2\.25\.\d{10,}|\d+(?:\.\d+){4,})(?![\d.]*\d)")
_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
            ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
            ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}  # fmt: skip
_MON = "(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_SEP = r"[-/. _,]*"
_ORD = r"(?:st|nd|rd|th)?"
_DATE_PATTERNS = [
    # year first: 2019-03-14, 2019/3/14, 20190314, 2019 03 14
    (re.compile(r"(?<!\d)(\d{4})[-/. _]?(\d{1,2})[-/. _]?(\d{1,2})(?!\d)"), "ymd"),
    # day or month first with separators: 14/03/2019, 3-14-19, 14.03.2019
    (re.compile(r"(?<!\d)(\d{1,2})[-/. _](\d{1,2})[-/. _](\d{4}|\d{2})(?!\d)"), "xxy"),
    # eight digits day or month first: 14032019, 03142019
    (re.compile(r"(?<!\d)(\d{2})(\d{2})(\d{4})(?!\d)"), "xxy"),
    # month names: 14 March 2019, 14-mar-19, 14th of march, 2019
    (re.compile(rf"(?<!\d)(\d{{1,2}}){_ORD}{_SEP}(?:of{_SEP})?{_MON}{_SEP}(\d{{4}}|\d{{2}})(?!\d)"),
     "dmy"),
    # March 14, 2019; mar 14 19
    (re.compile(rf"{_MON}{_SEP}(\d{{1,2}}){_ORD}{_SEP}(\d{{4}}|\d{{2}})(?!\d)"), "mdy"),
    # 2019 March 14
    (re.compile(rf"(?<!\d)(\d{{4}}){_SEP}{_MON}{_SEP}(\d{{1,2}})(?!\d)"), "ymd"),
]  # fmt: skip


def normalise(text: str) -> str:
    """NFKC, invisible and combining characters removed, look-alikes folded, case folded."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(
        ch
        for ch in unicodedata.normalize("NFD", text)
        if unicodedata.category(ch) not in ("Cf", "Mn", "Me", "Co", "Cs")
        and (ch in "\t\n\r" or unicodedata.category(ch) != "Cc")
    )
    return unicodedata.normalize("NFC", text).translate(_CONFUSABLES).casefold()


def _compact(normal: str) -> str:
    return "".join(ch for ch in normal if ch.isalnum()).translate(_SKELETON)


def find_uids(normal: str) -> list[str]:
    """DICOM UIDs in normalised text (anyone's, not only the site's)."""
    return _UID.findall(normal)


def _year(text: str) -> tuple[int, ...]:
    value = int(text)
    return (value,) if len(text) == 4 else (1900 + value, 2000 + value)


def _month(text: str) -> int:
    return _MONTHS[text] if text in _MONTHS else int(text)


def find_dates(normal: str, dates: frozenset[str]) -> list[str]:
    """The written dates in normalised text that are dates of ``dates`` (YYYYMMDD)."""
    if not dates:
        return []
    found: list[str] = []
    for pattern, order in _DATE_PATTERNS:
        for match in pattern.finditer(normal):
            a, b, c = match.groups()
            if order == "ymd":
                candidates = [(y, _month(b), int(c)) for y in _year(a)]
            elif order == "dmy":
                candidates = [(y, _month(b), int(a)) for y in _year(c)]
            elif order == "mdy":
                candidates = [(y, _month(a), int(b)) for y in _year(c)]
            else:  # day and month in either order
                candidates = [(y, int(b), int(a)) for y in _year(c)]
                candidates += [(y, int(a), int(b)) for y in _year(c)]
            if any(f"{y:04d}{m:02d}{d:02d}" in dates for y, m, d in candidates):
                found.append(match.group(0).strip())
    return found


class IdentifierMatcher:
    """Searches normalised text for a fixed set of identifiers."""

    def __init__(self, identifiers: Iterable[str], min_length: int) -> None:
        self._words: dict[str, str] = {}  # short ones: whole-word, on the normal text
        groups: dict[str, dict[int, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
        for ident in identifiers:
            normal = normalise(ident)
            compact = _compact(normal)
            if len(compact) >= min_length:
                groups[compact[:4]][len(compact)][compact] = ident
            elif normal:
                self._words[normal] = ident
        self._groups = {prefix: dict(by_len) for prefix, by_len in groups.items()}
        self._word_re = (
            re.compile(
                r"(?<![a-z0-9])("
                + "|".join(re.escape(w) for w in sorted(self._words, key=len, reverse=True))
                + r")(?![a-z0-9])"
            )
            if self._words
            else None
        )

    def find(self, normal: str) -> list[str]:
        """The identifiers found in ``normal`` (text passed through :func:`normalise`)."""
        found: set[str] = set()
        if self._groups:
            compact = _compact(normal)
            for prefix, by_len in self._groups.items():
                start = compact.find(prefix)
                while start >= 0:
                    for length, needles in by_len.items():
                        hit = needles.get(compact[start : start + length])
                        if hit is not None:
                            found.add(hit)
                    start = compact.find(prefix, start + 1)
        if self._word_re is not None:
            found.update(self._words[m] for m in self._word_re.findall(normal))
        return sorted(found)


@lru_cache(maxsize=8)
def matcher_for(identifiers: frozenset[str], min_length: int) -> IdentifierMatcher:
    """One matcher per identifier set (building it normalises every identifier)."""
    return IdentifierMatcher(identifiers, min_length)
