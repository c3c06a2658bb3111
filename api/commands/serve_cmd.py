"""``corral serve``: the viewer and the API (``corral users`` is in :mod:`corral.api.commands.users_cmd`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from corral.api.cli import CliError, emit, register
from corral.api.commands.index_cmd import add_recognize_only_args, run_recognize_only

if TYPE_CHECKING:
    from corral.api.auth import UserStore

#: What `corral embed`, `corral map` and the label store leave in a workspace; a folder with none is not one.
WORKSPACE_PARTS = ("embeddings", "maps", "labels.sqlite", "users.json", "index")


def _add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", "-w", default=None, help="the workspace to curate (made by `corral embed` and `corral map`); required unless --recognize-only --from")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765)")
    p.add_argument("--source-root", action="append", default=[], metavar="DIR", help="a folder curators may start embed jobs in (repeatable; default: any folder in single-user mode, none otherwise)")
    p.add_argument("--no-warm-split", dest="warm_split", action="store_false", help="do not compile the re-clustering code in the background at start-up (the first split then waits for it)")
    p.add_argument("--offline", action="store_true", help="never download model weights (embed jobs, recognition): sets HF_HUB_OFFLINE=1 for the server")
    p.add_argument("--cookie-secure", action="store_true", help="mark the session cookie Secure (serving behind HTTPS); it is Secure anyway on requests that arrive over HTTPS")
    p.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDR", help="address of a reverse proxy whose X-Forwarded-Proto/-For headers are believed (repeatable; default none)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"), help="server log level (default info)")
    add_recognize_only_args(p)


def _run_serve(args: argparse.Namespace) -> int:
    import os

    from corral.api.server import serve

    if args.offline:
        # The server builds embedders in its jobs and its recognition service; all read this.
        os.environ["HF_HUB_OFFLINE"] = "1"
    if args.recognize_only:
        return run_recognize_only(args)
    if not args.workspace:
        raise CliError("--workspace DIR is required (or --recognize-only --from SOURCE)")

    from corral.api.app import create_app
    from corral.api.auth import LOCAL_USER, UserStore
    from corral.api.settings import Settings

    ws = Path(args.workspace).expanduser().resolve()
    if not ws.is_dir():
        raise CliError(f"--workspace {args.workspace}: no such folder; run `corral embed SOURCE --workspace {args.workspace}` first")
    if not any((ws / part).exists() for part in WORKSPACE_PARTS):
        raise CliError(
            f"--workspace {args.workspace}: not a Corral workspace (it holds none of {', '.join(WORKSPACE_PARTS)}); "
            f"make one with `corral embed SOURCE --workspace {args.workspace}` and `corral map --workspace {args.workspace}` (or try `corral demo`)"
        )
    if not 0 < args.port < 65536:
        raise CliError(f"--port {args.port}: expected 1 to 65535")
    users = UserStore(ws)
    local = users.is_local_only()
    token = _local_token(users) if local else None
    settings = Settings(
        workspace=ws,
        host=args.host,
        port=args.port,
        source_roots=[Path(p) for p in args.source_root],
        allow_any_source=local and not args.source_root,
        warm_split=args.warm_split,
        cookie_secure=args.cookie_secure,
    )
    app = create_app(settings, users=users)
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{shown_host}:{args.port}/"
    if token:
        url += f"?token={token}"
        sys.stderr.write(f"corral: single-user mode; open {url}\n  (this link signs you in as '{LOCAL_USER}'; a new one is made each start)\n")
    else:
        sys.stderr.write(f"corral: open {url} and sign in (add a user: corral users add NAME --role curator --password --workspace {ws})\n")
    emit({"url": url, "workspace": str(ws), "single_user": local})
    serve(app, host=args.host, port=args.port, log_level=args.log_level, header_timeout_s=settings.header_timeout_s, trusted_proxies=args.trusted_proxy)
    return 0


def _local_token(users: UserStore) -> str:
    """A new token for the single user. A read-only workspace cannot store it, yet can be browsed:
    the token is then kept in memory for this start (the link works until the server stops)."""
    from corral.api.auth import LOCAL_USER
    from corral.storage.diskerrors import WorkspaceReadOnly, write_problem

    try:
        return users.add(LOCAL_USER, role="admin", replace=True)
    except OSError as e:
        if not isinstance(write_problem(e), WorkspaceReadOnly):
            raise
    sys.stderr.write("corral: the workspace is read-only: it can be browsed, not changed; this start's token is kept in memory only\n")
    return users.hold(LOCAL_USER, role="admin")


register("serve", "serve the viewer and the API for a workspace", _add_serve, _run_serve)
