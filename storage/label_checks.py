"""Input checks of the label store: names, item ids, durations, labels that must exist.

Every check runs before anything is written and raises :class:`LabelError` with a message that
names the parameter, the bad value and what would be accepted. Every label name that enters the
store or looks a label up passes :func:`check_name`, which folds it (:mod:`corral.storage.label_names`);
:func:`warn_look_alikes` notes the new names that read like another label's.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable
from typing import Any

from corral.storage.events import LabelError, LabelRow, Txn
from corral.storage.label_names import close_look_alikes, fold_name, look_alike_warnings

MAX_NAME = 200  # characters in a label or user name
MAX_ITEM_ID = 256  # characters in an item id
MAX_DURATION_MS = 24 * 3600 * 1000
_FORMAT_OK = {"\u200c", "\u200d"}  # zero-width (non-)joiners: part of emoji and some scripts


def check_name(value: Any, what: str = "label") -> str:
    """A label name, folded (NFKC, Unicode spaces made plain, runs of them one, trimmed), or
    :class:`LabelError` saying why not."""
    if not isinstance(value, str):
        raise LabelError(f"{what} must be text, got {type(value).__name__} {value!r:.60}")
    return _check_text(fold_name(value), what)


def check_user(value: Any, what: str = "user") -> str:
    """A user name, NFC-normalised and trimmed (not folded: events already record users as given)."""
    if not isinstance(value, str):
        raise LabelError(f"{what} must be text, got {type(value).__name__} {value!r:.60}")
    return _check_text(unicodedata.normalize("NFC", value).strip(), what)


def _check_text(name: str, what: str) -> str:
    if not name:
        raise LabelError(f"{what} is empty; give it a name")
    if len(name) > MAX_NAME:
        raise LabelError(f"{what} is {len(name):,} characters long; the limit is {MAX_NAME}")
    for ch in name:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cs", "Co", "Cn", "Zl", "Zp") or (cat == "Cf" and ch not in _FORMAT_OK):
            raise LabelError(f"{what} {name[:40]!r} contains the control character U+{ord(ch):04X}; use printable text only")
    return name


def check_ids(value: Any, what: str, *, allow_empty: bool = False) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise LabelError(f"{what} must be a list of item ids, not {type(value).__name__} {value!r:.60}")
    ids = list(dict.fromkeys(value))
    if not ids and not allow_empty:
        raise LabelError(f"{what} is empty; select at least one item")
    for i in ids:
        if not isinstance(i, str) or not i or len(i) > MAX_ITEM_ID:
            raise LabelError(f"{what} holds {i!r:.60}, which is not an item id (non-empty text up to {MAX_ITEM_ID} characters)")
    return ids


def check_duration(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DURATION_MS:
        raise LabelError(f"duration_ms={value!r}: expected whole milliseconds from 0 to {MAX_DURATION_MS:,}, or None")
    return value


def require_known(tx: Txn, ids: list[str], what: str) -> None:
    unknown = tx.unknown_items(ids)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5:,} more" if len(unknown) > 5 else "")
        raise LabelError(f"{what}: {len(unknown):,} unknown item id(s): {shown}; embed or register the items first")


def require_label(tx: Txn, name: str, what: str = "label") -> LabelRow:
    row = tx.resolve(name)
    if row is None:
        names = sorted(r.name for r in tx.labels.values() if r.active)
        close = close_look_alikes(name, names)[:3] or difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else f"; existing labels: {', '.join(map(repr, names[:10])) or 'none'}"
        raise LabelError(f"{what} {name!r} does not exist{hint}")
    return row


def warn_look_alikes(tx: Txn, rows: list[LabelRow]) -> None:
    """Add a warning to ``tx`` for each of ``rows`` (labels just created or renamed) whose name
    reads like another active label's name or alias, or mixes scripts in one word."""
    if not rows:
        return
    existing = [(n, r.name, r.id) for r in tx.labels.values() if r.active for n in (r.name, *r.aliases)]
    tx.warnings += look_alike_warnings([(r.name, r.id) for r in rows], existing)
