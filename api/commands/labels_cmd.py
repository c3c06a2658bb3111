"""``corral labels``: import, list, history, stats, undo/redo and check of the label store, and
``migrate`` to move a store between SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from dataclasses import asdict

from corral.api import labelsopt
from corral.api.cli import CliError, emit, register


def default_user() -> str:
    """Who the CLI acts as: ``CORRAL_USER``, else the login name."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        login = ""
    return os.environ.get("CORRAL_USER") or login or "cli"


def _add(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="labels_command", metavar="ACTION", help="import, list, history, stats, undo, redo, check or migrate; each has its own --help")
    imp = sub.add_parser("import", help="import labels from a CSV/JSONL/Parquet file (id or uri/path, and label), or boxes from COCO / LabelMe JSON")
    imp.add_argument("file", nargs="?", default=None, help="label file, COCO .json, LabelMe .json or a folder of them; leave out with --from-workspace")
    imp.add_argument("--from-workspace", action="store_true", help="import the labels the embedded manifests carried (their 'label' column)")
    imp.add_argument("--keep-existing", action="store_true", help="leave items that already carry a label alone (default: the file wins)")
    imp.add_argument("--strict", action="store_true", help="fail, importing nothing, when any row names an unknown item")
    lst = sub.add_parser("list", help="the labels with their item counts and aliases")
    lst.add_argument("--all", action="store_true", help="include deleted and merged labels")
    his = sub.add_parser("history", help="the event log, oldest first")
    his.add_argument("--since", type=int, default=0, help="only events after this id (default 0)")
    his.add_argument("--limit", type=int, default=100, help="at most this many events (default 100)")
    his.add_argument("--by", default=None, help="only this curator's events")
    sub.add_parser("stats", help="per curator: actions, items per action, time per action, actions per hour")
    sub.add_parser("undo", help="undo your newest action (see --user)")
    sub.add_parser("redo", help="redo the action you undid most recently")
    sub.add_parser("check", help="verify the current labels equal a replay of the events")
    for sp in (imp, lst, his, *(sub.choices[n] for n in ("stats", "undo", "redo", "check"))):
        sp.add_argument("--workspace", "-w", required=True, help="workspace folder")
        sp.add_argument("--user", default=None, help="who acts (default: $CORRAL_USER or your login name)")
        labelsopt.add_option(sp)
    mig = sub.add_parser("migrate", help="copy a whole label store, history included, into another (SQLite -> PostgreSQL or back) and check both replay equal")
    mig.add_argument("--from", dest="source", required=True, metavar="STORE", help="the store to copy: sqlite:PATH (a workspace's labels.sqlite) or postgresql://...")
    mig.add_argument("--to", dest="target", required=True, metavar="STORE", help="where to copy it: postgresql://host/database or sqlite:PATH; must be empty")
    mig.add_argument("--replace", action="store_true", help="empty a target that already holds labels first (default: refuse it)")


def _run(args: argparse.Namespace) -> int:
    from corral.storage.labels import LabelStore
    from corral.storage.workspace import Workspace

    cmd = args.labels_command
    if cmd is None:
        raise CliError("choose an action: import, list, history, stats, undo, redo, check or migrate (see `corral labels --help`)")
    if cmd == "migrate":
        return _migrate(args)
    ws = Workspace(args.workspace)
    if not ws.root.is_dir():
        raise CliError(f"workspace {ws.root} does not exist")
    user = args.user or default_user()
    if cmd == "import":
        from corral.storage.label_import import import_labels

        if (args.file is None) == (not args.from_workspace):
            raise CliError("give a label FILE or --from-workspace (one of them)")
        rep = import_labels(args.file, workspace=ws, user=user, overwrite=not args.keep_existing, strict=args.strict)
        if not args.quiet:
            sys.stderr.write(
                f"imported {rep.imported:,} item labels ({rep.labels} labels, {len(rep.labels_created)} new) from {rep.file}; "
                f"{rep.unknown:,} rows name unknown items, {rep.empty_label:,} have no label\n"
            )
            if rep.unknown_examples:
                sys.stderr.write("  unknown items, e.g.: " + ", ".join(rep.unknown_examples[:5]) + "\n")
        for w in rep.warnings:  # printed even with --quiet: they are about the data, and rare
            sys.stderr.write(f"warning: {w}\n")
        emit(rep.summary())
        return 0
    with LabelStore.open(ws) as store:
        if cmd == "list":
            labels = store.labels(include_inactive=args.all)
            if not args.quiet:
                for li in labels:
                    sys.stderr.write(f"{li.count:>8,}  {li.name}" + (f"  (also: {', '.join(li.aliases)})" if li.aliases else "") + "\n")
            emit({"labels": [asdict(li) for li in labels], "version": store.version()})
        elif cmd == "history":
            events = store.events(since=args.since, limit=args.limit, user=args.by)
            emit({"events": [asdict(e) for e in events], "version": store.version()})
        elif cmd == "stats":
            emit({"curators": store.curator_stats()})
        elif cmd in ("undo", "redo"):
            res = store.undo(user=user) if cmd == "undo" else store.redo(user=user)
            if not args.quiet:
                sys.stderr.write(f"{cmd} of event {store.events(since=res.event_id - 1, limit=1)[0].payload['target']}: {len(res.changed)} items changed, {res.conflicts} conflicts\n")
            emit({"event_id": res.event_id, "kind": res.kind, "changed": len(res.changed), "conflicts": res.conflicts})
        else:
            problems = store.check()
            for p in problems[:20]:
                sys.stderr.write(p + "\n")
            emit({"consistent": not problems, "problems": len(problems), "version": store.version()})
            return 0 if not problems else 1
    return 0


def _migrate(args: argparse.Namespace) -> int:
    import time

    from corral.storage.label_copy import compare, copy_store
    from corral.storage.label_location import parse
    from corral.storage.labels import LabelStore

    src_at, dst_at = parse(args.source), parse(args.target)
    if src_at == dst_at:
        raise CliError(f"--from and --to are the same store ({src_at}); name another target")
    if src_at.kind == "sqlite" and not src_at.path.is_file():
        raise CliError(f"--from {args.source}: no such file; a workspace's store is WORKSPACE/labels.sqlite")
    t0 = time.perf_counter()
    with LabelStore(src_at.target) as src, LabelStore(dst_at.target) as dst:
        res = copy_store(src, dst, replace=args.replace)
        problems = compare(src, dst)
        version = dst.version()
    for p in problems[:20]:
        sys.stderr.write(p + "\n")
    if not args.quiet:
        sys.stderr.write(
            f"copied {res.rows['events']:,} events, {res.rows['labels']:,} labels and {res.rows['items']:,} item ids from {src_at} to {dst_at} "
            f"in {time.perf_counter() - t0:.1f}s; " + ("both replay equal" if not problems else f"{len(problems)} differences (see above)") + "\n"
        )
    emit({"from": str(src_at), "to": str(dst_at), "version": version, "rows": res.rows, "equal": not problems, "problems": len(problems)})
    return 0 if not problems else 1


register("labels", "import, list and audit labels (import, list, history, stats, undo, redo, check, migrate)", _add, _run)
