"""The viewer's ES modules joined into one script when the app starts (no Node, no build step).

The viewer is written as small ES modules (``viewer/src``). Loading 25 of them is 25 requests,
which a busy server answers slowly enough to delay the first frame, so the app serves them as
one script: each module becomes a function scope whose exports land in a table, and each
``import { a, b as c } from './x.js'`` becomes ``const { a, b: c } = table['x.js']``. Only those
two forms are allowed (the viewer uses nothing else); anything else is an error at start-up, not
a broken page. The modules themselves stay servable under ``/src`` for debugging and tests.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

_IMPORT = re.compile(r"^import\s*\{([^}]*)\}\s*from\s*'\./([\w.-]+\.js)';[ \t]*$", re.M)
_ANY_IMPORT = re.compile(r"^\s*import\s[^(]", re.M)
_EXPORT_DECL = re.compile(r"^export\s+((?:async\s+)?function\*?|class|const|let)\s+([A-Za-z_$][\w$]*)", re.M)
_EXPORT_ANY = re.compile(r"^\s*export\s", re.M)


class BundleError(ValueError):
    """The viewer's modules use a form the joiner does not handle."""


@dataclass(frozen=True)
class Bundle:
    code: str
    etag: str
    modules: tuple[str, ...]


def _imports(name: str, code: str) -> list[tuple[str, str]]:
    """(names, module) of each import statement of ``code``."""
    found = [(m.group(1), m.group(2)) for m in _IMPORT.finditer(code)]
    if len(found) != len(_ANY_IMPORT.findall(code)):
        raise BundleError(f"{name}: only `import {{ a, b }} from './x.js';` imports can be joined")
    return found


def _order(src: Path, entry: str) -> list[str]:
    """Modules reachable from ``entry``, dependencies first."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise BundleError("circular imports: " + " -> ".join((*chain, name)))
        path = src / name
        if not path.is_file():
            raise BundleError(f"{chain[-1] if chain else 'entry'} imports {name}, which is not in {src}")
        state[name] = 1
        for _, dep in _imports(name, path.read_text(encoding="utf-8")):
            visit(dep, (*chain, name))
        state[name] = 2
        order.append(name)

    visit(entry, ())
    return order


def _module(name: str, code: str) -> str:
    exported: list[str] = [m.group(2) for m in _EXPORT_DECL.finditer(code)]
    body = _EXPORT_DECL.sub(lambda m: f"{m.group(1)} {m.group(2)}", code)
    if _EXPORT_ANY.search(body):
        raise BundleError(f"{name}: only `export function|class|const|let NAME` exports can be joined")

    def imp(m: re.Match) -> str:
        parts = [p.strip() for p in m.group(1).split(",") if p.strip()]
        names = [re.sub(r"^(\w+)\s+as\s+(\w+)$", r"\1: \2", p) for p in parts]
        return f"const {{ {', '.join(names)} }} = __corral[{m.group(2)!r}];"

    body = _IMPORT.sub(imp, body)
    return f"// ---- {name}\n__corral[{name!r}] = (() => {{\n{body}\nreturn {{ {', '.join(exported)} }};\n}})();\n"


def build_bundle(src: str | Path, *, entry: str = "main.js") -> Bundle:
    """Join the modules reachable from ``entry`` in ``src`` into one script."""
    src = Path(src)
    names = _order(src, entry)
    parts = ["'use strict';", "const __corral = Object.create(null);"]
    parts += [_module(n, (src / n).read_text(encoding="utf-8")) for n in names]
    code = "\n".join(parts)
    return Bundle(code, hashlib.sha1(code.encode()).hexdigest()[:16], tuple(names))
