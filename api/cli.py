"""The ``corral`` command line.

Every command calls the same library functions as the API and the notebooks. Heavy imports
(torch, umap, faiss, fastapi) happen inside the command that needs them, so ``corral --help``
is instant. A human summary goes to stderr; the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("corral")

#: Commands that run the map's numba kernels (umap-learn, fast_hdbscan): the CLI caches them on disk.
JIT_COMMANDS = frozenset({"map", "demo", "serve"})

#: name -> (add_arguments, run) for every subcommand; other modules add theirs with ``command``.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def register(name: str, help: str, add: Callable[[argparse.ArgumentParser], None], run: Callable[[argparse.Namespace], int]) -> None:
    """Add a subcommand: ``add`` declares its options, ``run(args)`` returns the exit code."""
    COMMANDS[name] = (help, add, run)


def emit(obj: dict[str, Any]) -> None:
    """The machine-readable last line of a command."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    from corral.api import commands  # noqa: F401  (registers the subcommands)

    p = argparse.ArgumentParser(
        prog="corral",
        description="Label image collections by cluster: embed, map, curate, publish, recognise.",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summaries on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    from corral.api import labelsopt

    for name, (help_, add, _) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        add(sp)
        if name in labelsopt.LABEL_COMMANDS:
            labelsopt.add_option(sp)
    return p


def _cache_compiled_kernels(*, command: str, quiet: bool) -> None:
    """Keep numba's compiled map kernels on disk across runs (see :mod:`corral.pipeline.jitcache`)."""
    from corral.pipeline import jitcache

    folder = jitcache.enable()
    if folder is not None and not quiet and command in ("map", "demo") and not jitcache.is_warm(folder):
        sys.stderr.write(f"corral: compiling the map's kernels once (~1 min on 2 cores); later runs reuse them from {folder}\n")


def _sleep_while_waiting() -> None:
    """Have OpenMP threads (torch's model, numba's map kernels) sleep, not spin, while they wait.

    A spinning thread burns the time slice the thread it waits for needs; on a 2-core machine that
    also runs other work, the embed stage's model ran at 7 img/s instead of 31 (and 72 against 77
    when the cores are free). Read when torch loads, so before any command imports it; a value the
    user set is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    _sleep_while_waiting()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    level = logging.WARNING if args.quiet else (logging.INFO if args.verbose == 1 else logging.DEBUG if args.verbose > 1 else logging.WARNING)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.verbose == 0 and not args.quiet:
        logging.getLogger("corral").setLevel(logging.INFO)
    _, _, run = COMMANDS[args.command]
    if args.command in JIT_COMMANDS:
        _cache_compiled_kernels(command=args.command, quiet=args.quiet)
    try:
        from corral.api import labelsopt

        labelsopt.apply(args)
        return int(run(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; finished shards are kept, rerun the same command to resume\n")
        return 130
    except (CliError, ValueError, FileNotFoundError) as e:
        sys.stderr.write(f"corral {args.command}: error: {e}\n")
        return 2
    except (OSError, sqlite3.Error) as e:  # a full or read-only disk, or another system refusal: one line, no traceback
        from corral.storage.diskerrors import write_problem

        problem = write_problem(e)
        sys.stderr.write(f"corral {args.command}: error: {problem or e}\n")
        return 2 if isinstance(e, PermissionError) else 1
