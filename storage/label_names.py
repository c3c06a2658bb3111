"""What makes two label names the same name, and when two different names only look alike.

A label name is *folded* before it enters the store or looks a label up: Unicode NFKC (fullwidth
``ｃａｔ`` is ``cat``, the ligature ``ﬁ`` is ``fi``), every Unicode space (no-break, thin,
ideographic, ...) a plain space, runs of spaces one, and the ends trimmed. Two names are the same
label when their folded forms match case-insensitively (:func:`name_key`); the key folds too, so a
label stored before folding existed is still found by the folded spelling.

Names in different letters that read alike (Latin ``cat`` and ``саt`` with Cyrillic ``с`` and
``а``) are different names: the store accepts them and warns. Their *skeleton* maps the Cyrillic
and Greek letters that look like Latin ones to those Latin letters, so look-alikes share a
skeleton. The table holds the common look-alikes only, not Unicode's whole confusables list.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

_SPACE_RUN = re.compile(" {2,}")

# Capitals first (before case folding), since Cyrillic "Н" folds to "н", which reads nothing like h.
_CAPITALS = {
    # Cyrillic
    "А": "a", "В": "b", "Е": "e", "Ѕ": "s", "І": "i", "Ј": "j", "К": "k", "М": "m", "Н": "h", "О": "o",
    "Р": "p", "С": "c", "Т": "t", "У": "y", "Х": "x", "Ү": "y", "Ԛ": "q", "Ԝ": "w", "Ӏ": "l",
    # Greek
    "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m", "Ν": "n", "Ο": "o",
    "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x",
}  # fmt: skip
_SMALL = {
    # Cyrillic
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j",
    "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w", "ү": "y", "ɡ": "g",
    # Greek
    "ο": "o", "α": "a", "ι": "i", "κ": "k", "ν": "v", "ρ": "p", "υ": "u", "χ": "x", "γ": "y", "ϲ": "c", "ϳ": "j",
}  # fmt: skip
_CAPITALS_TABLE = str.maketrans(_CAPITALS)
_SMALL_TABLE = str.maketrans(_SMALL)
_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK")  # scripts whose letters are confused with each other


def fold_name(text: str) -> str:
    """``text`` in NFKC with every Unicode space a plain one, runs of them one, and trimmed."""
    if not text.isascii():  # ASCII is NFKC already, and its one space is the plain one
        text = unicodedata.normalize("NFKC", text)
        text = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in text)
    return _SPACE_RUN.sub(" ", text).strip()


@lru_cache(maxsize=65536)
def name_key(name: str) -> str:
    """The identity of a label name: folded and case-insensitive (``CAT``, ``ｃａｔ``, ``cat\\u00a0``)."""
    return unicodedata.normalize("NFKC", fold_name(name).casefold())


@lru_cache(maxsize=65536)
def skeleton(name: str) -> str:
    """``name`` with Cyrillic and Greek look-alikes of Latin letters made Latin, case folded: two
    names with the same skeleton read alike."""
    return name_key(fold_name(name).translate(_CAPITALS_TABLE)).translate(_SMALL_TABLE)


def _script(ch: str) -> str | None:
    word = unicodedata.name(ch, "").split(" ", 1)[0]
    return word.title() if word in _SCRIPTS else None


def _look_alike_letters(name: str) -> str:
    """The letters of ``name`` that read as Latin ones but are not, by script: "Cyrillic с, а"."""
    by_script: dict[str, list[str]] = {}
    for ch in dict.fromkeys(fold_name(name)):
        script = _script(ch)
        if script not in (None, "Latin") and (ch in _CAPITALS or ch in _SMALL):
            by_script.setdefault(script, []).append(ch)
    return "; ".join(f"{script} {', '.join(chars)}" for script, chars in by_script.items())


def mixed_word(name: str) -> tuple[str, ...]:
    """The scripts mixed inside one word of ``name`` (Latin with Cyrillic or Greek), or ``()``.
    "α-tubulin" mixes none (two words); "саt" mixes Cyrillic and Latin."""
    for word in re.split(r"[^\w]|[\d_]", fold_name(name)):
        scripts = {s for s in map(_script, word) if s is not None}
        if len(scripts) > 1:
            return tuple(sorted(scripts))
    return ()


def look_alike_warnings(new: Iterable[tuple[str, int]], existing: Iterable[tuple[str, str, int]]) -> list[str]:
    """Warnings for names that just entered the store.

    Args:
        new: ``(name, label id)`` of each name a label was created with or renamed to, in order.
        existing: ``(name or alias, label name, label id)`` for every name of the active labels.

    A new name warns when it reads like a name or alias of another label, naming that label; else
    when one of its words mixes Latin with Cyrillic or Greek letters. Each new name is compared
    with the existing names and the new names before it, so a pair of new look-alikes warns once.
    """
    new = list(new)
    new_ids = {lid for _, lid in new}
    index: dict[str, dict[int, str]] = {}  # skeleton -> label id -> label name
    for alias, label, lid in existing:
        if lid not in new_ids:
            index.setdefault(skeleton(alias), {})[lid] = label
    out = []
    for name, lid in new:
        like = sorted({label for other, label in index.get(skeleton(name), {}).items() if other != lid}, key=name_key)
        letters = _look_alike_letters(name)
        if like:
            shown = ", ".join(map(repr, like))
            which = "the existing label" if len(like) == 1 else "the existing labels"
            theirs = _look_alike_letters(like[0])
            spelled = f"spelled with {letters}" if letters else f"which is spelled with {theirs}" if theirs else "spelled with other letters"
            meant = shown if len(like) == 1 else "one of them"
            out.append(f"{name!r} looks like {which} {shown} but is a different name, {spelled}; undo and use {meant} if that was meant")
        elif scripts := mixed_word(name):
            out.append(f"{name!r} mixes {' and '.join(scripts)} letters in one word" + (f" ({letters})" if letters else "") + "; check its spelling")
        index.setdefault(skeleton(name), {})[lid] = name
    return out


def close_look_alikes(name: str, names: Iterable[str]) -> list[str]:
    """The names among ``names`` that read like ``name`` (same skeleton, different name)."""
    sk, key = skeleton(name), name_key(name)
    return [n for n in names if skeleton(n) == sk and name_key(n) != key]
