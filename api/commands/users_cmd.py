"""``corral users``: people (passwords), services and scripts (tokens), and their roles."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from corral.api.cli import CliError, emit, register

ROLE_HELP = "viewer: read; curator: label; service: recognise only; admin: all, and manage users"


def _add_users(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    a = sub.add_parser("add", help="add a user: a password to sign in with, or a token (printed once)", description="add a user: a password (--password) or a token for scripts (printed once)")
    a.add_argument("name", help="user name (letters, digits, . _ @ -)")
    a.add_argument("--role", required=True, choices=("viewer", "curator", "service", "admin"), help=ROLE_HELP)
    a.add_argument("--workspace", "-w", required=True, help="the workspace the user may use")
    a.add_argument("--password", action="store_true", help="ask for a password (twice), or read it from stdin when stdin is not a terminal; no token is made unless --token")
    a.add_argument("--token", action="store_true", help="with --password: make a token as well")
    a.add_argument("--rotate", action="store_true", help="the user exists: give them a new token (the old one stops working)")
    pw = sub.add_parser("passwd", help="set a user's password (their sessions end)", description="set a user's password (asked twice, or one line of stdin when not a terminal); their sessions end")
    pw.add_argument("name", help="user name")
    pw.add_argument("--workspace", "-w", required=True, help="the workspace")
    role = sub.add_parser("role", help="give a user another role", description="give a user another role")
    role.add_argument("name", help="user name")
    role.add_argument("role", choices=("viewer", "curator", "service", "admin"), help=ROLE_HELP)
    role.add_argument("--workspace", "-w", required=True, help="the workspace")
    ls = sub.add_parser("list", help="list users and roles", description="list users and roles")
    ls.add_argument("--workspace", "-w", required=True, help="the workspace")
    rm = sub.add_parser("remove", help="remove a user (their token and sessions stop working)", description="remove a user (their token and sessions stop working)")
    rm.add_argument("name", help="user name")
    rm.add_argument("--workspace", "-w", required=True, help="the workspace")


def read_password(name: str) -> str:
    """A new password for ``name``: asked twice on a terminal, else the first line of stdin (scripts)."""
    from corral.api.auth import AuthError, check_password

    if sys.stdin is None or not sys.stdin.isatty():
        line = sys.stdin.readline() if sys.stdin is not None else ""
        password = line.rstrip("\r\n")
        if not password:
            raise CliError("--password: stdin is not a terminal and gave no password (pipe one line, or run in a terminal)")
    else:
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise CliError("the two passwords differ; nothing was changed")
    try:
        return check_password(password, name)
    except AuthError as e:
        raise CliError(str(e)) from None


def _run_users(args: argparse.Namespace) -> int:
    from corral.api.auth import AuthError, UserStore
    from corral.api.sessions import SessionStore

    ws = Path(args.workspace).expanduser().resolve()
    if not ws.is_dir():
        raise CliError(f"--workspace {args.workspace}: no such folder")
    store = UserStore(ws)
    try:
        if args.users_command == "add":
            if args.token and not args.password:
                raise CliError("--token goes with --password (without --password a token is made anyway)")
            password = read_password(args.name) if args.password else None
            token = store.add(args.name, role=args.role, replace=args.rotate, password=password, token=args.token or not args.password)
            if token is not None:
                if not args.quiet:
                    sys.stderr.write(f"user {args.name} ({args.role}); token (shown once, keep it secret):\n")
                sys.stdout.write(token + "\n")
            elif not args.quiet:
                sys.stderr.write(f"user {args.name} ({args.role}) signs in with their password\n")
            emit({"user": args.name, "role": args.role, "password": password is not None, "token": token})
        elif args.users_command == "passwd":
            if store.get(args.name) is None:
                raise CliError(f"no user {args.name!r}")
            store.set_password(args.name, read_password(args.name))
            ended = SessionStore(ws).end_all(args.name)
            if not args.quiet:
                sys.stderr.write(f"user {args.name}: new password; {ended} sessions ended\n")
            emit({"user": args.name, "password": True, "sessions_ended": ended})
        elif args.users_command == "role":
            store.set_role(args.name, args.role)
            emit({"user": args.name, "role": args.role})
        elif args.users_command == "list":
            users = store.users()
            if not args.quiet:
                for u in users:
                    how = "+".join(k for k, on in (("password", u.has_password), ("token", u.has_token)) if on) or "-"
                    sys.stderr.write(f"{u.name}\t{u.role}\t{how}\t{u.created_at}\n")
            emit({"users": [u.public() for u in users]})
        else:
            store.remove(args.name)
            SessionStore(ws).end_all(args.name)
            emit({"removed": args.name})
    except AuthError as e:
        raise CliError(str(e)) from None
    return 0


register("users", "add, list or remove users of the viewer and API (passwords, tokens and roles)", _add_users, _run_users)
