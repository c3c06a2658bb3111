"""Options types that say each option once: its default, its help and its rule live on the field.

A stage's options are a frozen dataclass whose fields are declared with :func:`option` (a value)
or :func:`group` (a nested options dataclass, e.g. UMAP's settings under umap-learn's names). The
field carries what every reader of the option needs:

- the default (the dataclass default, nowhere else),
- a one-line ``help``, and ``unset``: what ``None`` stands for when the default is ``None``,
- the rule: the type comes from the annotation (``int``, ``float``, ``str``, ``bool``, each
  optionally ``| None``), bounds from ``low`` / ``high``, allowed values from ``choices``,
- how the command line spells it (``flag``) and under which heading of its help (``section``),
  see :mod:`corral.api.flags`,
- whether a job started over HTTP may set it (``job``: why not, for an option that names a file
  or a limit of the server's own).

:func:`check_fields` (called from ``__post_init__``) validates every field the way umap-learn
does: the error names the parameter, the bad value and what is allowed, so a bad value reads the
same from Python, the command line and an HTTP job. :func:`from_mapping` builds an options object
from plain data (JSON, ``KEY=VALUE`` pairs) and refuses unknown names, listing close ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

import numpy as np


def option(
    default: Any,
    help: str,
    *,
    unset: str | None = None,
    low: float | None = None,
    above: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
    pattern: str | None = None,
    rule: str | None = None,
    flag: bool | str = True,
    flag_help: str | None = None,
    section: str | None = None,
    job: str | None = None,
) -> Any:
    """A field of an options dataclass.

    ``unset`` says what ``None`` means (required when ``default`` is ``None``); ``low``/``high``
    are inclusive bounds, ``above`` an exclusive lower one; ``choices`` the allowed strings; ``pattern`` a full-match regular
    expression for strings, described to the user by ``rule``. ``flag`` is ``True`` for a
    command-line flag named after the field, a string for another flag name (a boolean whose
    default is true is switched off by it, described by ``flag_help``), ``False`` for none; a
    boolean whose default is ``None`` takes ``auto``, ``on`` or ``off``. ``section`` names the
    heading its flag is listed under (see the options class's ``SECTIONS``). ``job`` says why a job
    started over HTTP may not set it (``None``: it may).
    """
    if default is None and unset is None:
        raise TypeError("an option whose default is None needs `unset`: what None stands for")
    meta = {"help": help, "unset": unset, "low": low, "above": above, "high": high, "choices": choices, "pattern": pattern, "rule": rule}
    meta |= {"flag": flag, "flag_help": flag_help, "section": section, "job": job}
    return dataclasses.field(default=default, metadata=meta)


def group(cls: type, help: str, *, name: str, flags: tuple[str, ...] = ()) -> Any:
    """A nested options dataclass (its own names kept, e.g. UMAP's). ``name`` is how people call it
    ("UMAP"); on the command line its settings are ``--<field> KEY=VALUE``, and those named in
    ``flags`` have a flag of their own as well (``--n-neighbors``)."""
    known = {f.name for f in dataclasses.fields(cls)}
    if not set(flags) <= known:
        raise TypeError(f"group {name}: no settings {sorted(set(flags) - known)}")
    return dataclasses.field(default_factory=cls, metadata={"help": help, "group": name, "flags": flags})


def is_group(f: dataclasses.Field) -> bool:
    return "group" in f.metadata


def kind_of(f: dataclasses.Field) -> tuple[str, bool]:
    """``(int | float | str | bool, nullable)`` from the field's annotation."""
    text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    parts = [p.strip() for p in str(text).split("|")]
    nullable = "None" in parts
    base = [p for p in parts if p != "None"]
    if len(base) != 1 or base[0] not in ("int", "float", "str", "bool"):
        raise TypeError(f"option {f.name}: annotation {text!r} is not int, float, str or bool (optionally | None)")
    return base[0], nullable


def rule_of(f: dataclasses.Field, *, unset: bool = True) -> str:
    """What a field allows, in words: ``an integer >= 2 (or None: chosen ...)``; ``unset=False``
    says ``or None`` without what None stands for."""
    m = f.metadata
    kind, nullable = kind_of(f)
    if m.get("rule"):
        text = m["rule"]
    elif m.get("choices"):
        text = "one of " + ", ".join(repr(c) for c in m["choices"])
    elif kind == "bool":
        text = "true or false"
    elif kind == "str":
        text = "a non-empty string"
    else:
        noun = "an integer" if kind == "int" else "a number"
        lo, hi, gt = m.get("low"), m.get("high"), m.get("above")
        if gt is not None:
            text = f"{noun} > {_num(gt)}" + (f" and <= {_num(hi)}" if hi is not None else "")
        elif lo is not None and hi is not None:
            text = f"{noun} from {_num(lo)} to {_num(hi)}"
        elif lo is not None:
            text = f"{noun} >= {_num(lo)}"
        elif hi is not None:
            text = f"{noun} <= {_num(hi)}"
        else:
            text = noun
    if nullable:
        text += f" (or None: {m['unset']})" if unset and m.get("unset") else " (or None)"
    return text


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _fails(f: dataclasses.Field, value: Any) -> bool:
    """Whether ``value`` breaks the field's rule."""
    m = f.metadata
    kind, nullable = kind_of(f)
    if value is None:
        return not nullable
    if kind == "bool":
        return not isinstance(value, (bool, np.bool_))
    if kind == "str":
        if not isinstance(value, str) or not value.strip():
            return True
        if m.get("choices") and value not in m["choices"]:
            return True
        return bool(m.get("pattern")) and re.fullmatch(m["pattern"], value) is None
    if isinstance(value, (bool, np.bool_)):
        return True
    if kind == "int" and not isinstance(value, (int, np.integer)):
        return True
    if kind == "float" and not (isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(float(value))):
        return True
    lo, hi, gt = m.get("low"), m.get("high"), m.get("above")
    return (lo is not None and value < lo) or (hi is not None and value > hi) or (gt is not None and value <= gt)


def check_fields(obj: Any, where: str = "") -> None:
    """Validate every field of the options dataclass ``obj`` (call it from ``__post_init__``).

    ``where`` prefixes the parameter in messages (``"umap "``). Floats given as integers (JSON's
    ``1`` for ``1.0``) become floats, so what is saved reads the same however it was given.
    """
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if is_group(f):
            if not isinstance(value, f.default_factory):  # type: ignore[arg-type]
                raise ValueError(f"{f.name}={value!r:.80}: must be {f.metadata['group']} settings ({f.default_factory.__name__})")  # type: ignore[union-attr]
            continue
        kind = kind_of(f)[0]
        if kind == "float" and isinstance(value, (int, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_, float)):
            value = float(value)  # before the check, so that 2 and 2.0 read the same in its message
            object.__setattr__(obj, f.name, value)
        elif kind == "int" and isinstance(value, np.integer):
            value = int(value)
            object.__setattr__(obj, f.name, value)
        if _fails(f, value):
            raise ValueError(f"{where}{f.name}={value!r:.80}: must be {rule_of(f)}")


#: The rule of an option that becomes a folder name (say it as ``rule=`` and check it with :func:`check_folder_name`).
FOLDER_NAME_RULE = "printable text of 1 to 255 bytes (UTF-8)"


def check_folder_name(obj: Any, param: str = "name") -> None:
    """Check the option ``param`` of ``obj``, a name that becomes a folder name (None passes):
    at most 255 bytes of UTF-8 and no control characters. Call it after :func:`check_fields`."""
    value = getattr(obj, param)
    if value is None:
        return
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > 255:
        raise ValueError(f"{param}={value[:40]!r}...: must be a name of 1 to 255 bytes (UTF-8), not {size:,}; it becomes a folder name")
    bad = next((ch for ch in value if unicodedata.category(ch) in ("Cc", "Cs")), None)
    if bad is not None:
        raise ValueError(f"{param}={value[:80]!r}: must be printable text; it holds the control character U+{ord(bad):04X}")


def unknown_name(name: str, known: list[str], *, what: str) -> ValueError:
    """The error for a name an options type does not have, with the close ones or all of them."""
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(known))}"
    return ValueError(f"{name[:80]!r} is not {what}; {hint}")


def from_mapping(cls: type, data: Mapping[str, Any], *, what: str = "an option") -> Any:
    """An options object from plain data (JSON): nested groups as mappings; unknown names refused."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}: expected an object of names and values, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        f = fields.get(key)
        if f is None:
            raise unknown_name(str(key), list(fields), what=what)
        if is_group(f):
            if not isinstance(value, Mapping):
                raise ValueError(f"{key}={value!r:.80}: must be an object of {f.metadata['group']} settings")
            value = from_mapping(f.default_factory, value, what=f"a {f.metadata['group']} setting")  # type: ignore[arg-type]
        kwargs[key] = value
    return cls(**kwargs)


def to_mapping(obj: Any, *, changed_only: bool = False) -> dict[str, Any]:
    """Plain data of an options object (nested groups as dicts); ``changed_only`` keeps what differs from the defaults."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if is_group(f):
            inner = to_mapping(value, changed_only=changed_only)
            if inner or not changed_only:
                out[f.name] = inner
        elif not changed_only or value != f.default:
            out[f.name] = value
    return out


def parse_text(f: dataclasses.Field, text: str) -> Any:
    """A field's value from command-line text: ``none`` for None, numbers and true/false by the
    field's type. Text that does not parse is returned as it is, so that the field's own check
    reports it with the same words as any other bad value."""
    kind, nullable = kind_of(f)
    t = text.strip()
    if nullable and (t.lower() in ("none", "null") or (kind == "bool" and t.lower() == "auto")):
        return None
    try:
        if kind == "int":
            return int(t)
        if kind == "float":
            return float(t)
    except ValueError:
        return text
    if kind == "bool":
        low = t.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
    return text
