"""Command-line flags made from a stage's options dataclass (:mod:`corral.pipeline.options`).

Each option field becomes a flag with its name, type, help, default and choices taken from the
field, so none of them is written a second time: ``n_neighbors`` -> ``--n-neighbors``, a group
such as ``umap`` -> ``--umap KEY=VALUE`` (repeatable), with the group's chosen settings promoted
to flags of their own. A flag given overrides the same setting given as ``KEY=VALUE``. A boolean
that is chosen for the machine unless given (default ``None``) is ``--flag {auto,on,off}``.

:func:`options_from_args` builds the dataclass from the parsed flags; the dataclass checks the
values, so a bad one reads the same as from Python or an HTTP job. :func:`to_args` is the way
back: the flags that make a given options object (the HTTP job runs ``corral`` with them).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from typing import Any

from corral.pipeline.options import from_mapping, is_group, kind_of, parse_text, unknown_name

#: argparse destinations of the generated flags start with this, so they clash with no other flag.
_DEST = "opt:"


def flag_name(f: dataclasses.Field) -> str:
    flag = f.metadata.get("flag", True)
    return flag if isinstance(flag, str) else "--" + f.name.replace("_", "-")


def has_flag(f: dataclasses.Field) -> bool:
    return f.metadata.get("flag", True) is not False


def default_text(f: dataclasses.Field) -> str:
    """The default in words: ``15``, or what None stands for."""
    if f.default is None:
        return str(f.metadata.get("unset"))
    return str(f.default).lower() if isinstance(f.default, bool) else str(f.default)


def flag_help(f: dataclasses.Field, *, prefix: str = "") -> str:
    """A flag's help: the field's help and default (and what ``none`` means, where allowed)."""
    m = f.metadata
    kind, nullable = kind_of(f)
    if kind == "bool" and f.default is not None:
        text = m.get("flag_help") if f.default else m["help"]
    elif f.default is None:
        text = f"{m['help']} (default: {m['unset']})"
    elif nullable:
        text = f"{m['help']} (default {f.default}; none: {m['unset']})"
    else:
        text = f"{m['help']} (default {f.default})"
    return (prefix + str(text)).replace("%", "%%")


#: How a boolean option whose default is None (chosen for the machine) is written on the command line.
TRISTATE = {"auto": None, "on": True, "off": False}


def _tristate(f: dataclasses.Field, text: str) -> Any:
    """``auto`` / ``on`` / ``off`` (and what :func:`parse_text` reads); other text is left for the field's check."""
    return TRISTATE.get(text.strip().lower(), parse_text(f, text))


def _add_flag(p: Any, f: dataclasses.Field, dest: str, *, prefix: str = "") -> None:
    kind, nullable = kind_of(f)
    if kind == "bool" and not (nullable and f.default is None):
        if f.default and not isinstance(f.metadata.get("flag"), str):
            raise TypeError(f"option {f.name}: a boolean that defaults to true needs a flag name that switches it off")
        p.add_argument(flag_name(f), dest=dest, action="store_false" if f.default else "store_true", default=argparse.SUPPRESS, help=flag_help(f, prefix=prefix))
        return
    # Allowed values are shown, not enforced by argparse: the field checks them, so a wrong one
    # reads as it does from Python and from an HTTP job.
    choices = tuple(TRISTATE) if kind == "bool" else f.metadata.get("choices")
    p.add_argument(
        flag_name(f),
        dest=dest,
        type=functools.partial(_tristate if kind == "bool" else parse_text, f),
        default=argparse.SUPPRESS,
        metavar="{" + ",".join(choices) + "}" if choices else flag_name(f).lstrip("-").replace("-", "_").upper(),
        help=flag_help(f, prefix=prefix),
    )


def add_option_flags(p: argparse.ArgumentParser, cls: type) -> None:
    """Flags for every field of the options dataclass ``cls``; then one ``--GROUP KEY=VALUE`` per group.

    A field with a ``section`` is listed under that heading of the help, described by the class's
    ``SECTIONS`` (heading -> description)."""
    groups = []
    sections: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if is_group(f):
            inner = {g.name: g for g in dataclasses.fields(f.default_factory)}  # type: ignore[arg-type]
            for name in f.metadata["flags"]:
                _add_flag(p, inner[name], f"{_DEST}{f.name}.{name}", prefix=f"{f.metadata['group']} {name}: ")
            groups.append((f, inner))
        elif has_flag(f):
            section = f.metadata.get("section")
            if section and section not in sections:
                sections[section] = p.add_argument_group(section, cls.SECTIONS[section])  # type: ignore[attr-defined]
            _add_flag(sections[section] if section else p, f, _DEST + f.name)
    for f, inner in groups:
        keys = ", ".join(inner)
        p.add_argument(
            "--" + f.name,
            dest=f"{_DEST}{f.name}:pairs",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"{f.metadata['help']}, repeatable: {keys}".replace("%", "%%"),
        )


def options_from_args(args: argparse.Namespace, cls: type) -> Any:
    """The options object the parsed flags describe (defaults for what was not given)."""
    given = vars(args)
    data: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not is_group(f):
            if _DEST + f.name in given:
                data[f.name] = given[_DEST + f.name]
            continue
        inner = {g.name: g for g in dataclasses.fields(f.default_factory)}  # type: ignore[arg-type]
        values: dict[str, Any] = {}
        for pair in given.get(f"{_DEST}{f.name}:pairs", []):
            if "=" not in pair:
                raise ValueError(f"--{f.name} {pair!r}: expected KEY=VALUE")
            key, text = (part.strip() for part in pair.split("=", 1))
            if key not in inner:
                what = "a " + f.metadata["group"] + " setting"
                raise ValueError(f"--{f.name} {unknown_name(key, list(inner), what=what)}")
            values[key] = parse_text(inner[key], text)
        for name in f.metadata["flags"]:
            if f"{_DEST}{f.name}.{name}" in given:
                values[name] = given[f"{_DEST}{f.name}.{name}"]
        if values:
            data[f.name] = values
    return from_mapping(cls, data)


def _text(value: Any, f: dataclasses.Field | None = None) -> str:
    if f is not None and kind_of(f) == ("bool", True) and f.default is None:
        return next(k for k, v in TRISTATE.items() if v is value)
    if value is None:
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def to_args(obj: Any) -> list[str]:
    """The flags that make ``obj`` from the defaults (only what differs is written)."""
    out: list[str] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if is_group(f):
            for g in dataclasses.fields(value):
                v = getattr(value, g.name)
                if v == g.default:
                    continue
                if g.name in f.metadata["flags"]:
                    out.append(f"{flag_name(g)}={_text(v)}")
                else:
                    out += [f"--{f.name}", f"{g.name}={_text(v)}"]
        elif value != f.default and has_flag(f):
            switch = kind_of(f)[0] == "bool" and f.default is not None
            out.append(flag_name(f) if switch else f"{flag_name(f)}={_text(value, f)}")
        elif value != f.default:
            raise ValueError(f"{f.name}={value!r}: this option has no command-line flag")
    return out
