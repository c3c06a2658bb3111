"""Many writers at once, and writers killed with SIGKILL: no acknowledged action is lost.

Every test runs on both backends (the ``new_location`` fixture: a SQLite file, or a database of the
session's PostgreSQL server); a location is a path or a ``postgresql://`` URL throughout.

Writers are threads (some sharing one store object, some with their own) and separate processes
(this file run as a script). Each writer records every action the store acknowledged; afterwards
every acknowledged action must be in the event log, the log must hold nothing else, and the
current labels must equal an independent replay of the events' intents (the oracle below), as
well as the store's own replay of its change rows.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # when run as a writer process
    sys.path.insert(0, str(REPO))

from corral.storage.labels import LabelError, LabelStore  # noqa: E402

ITEMS = [f"item-{k:04d}" for k in range(300)]
LABELS = [f"L{k}" for k in range(8)]


def setup_store(path: str, *, synchronous: str = "FULL") -> None:
    with LabelStore(path, synchronous=synchronous) as s:
        s.register_items(ITEMS)
        for k, name in enumerate(LABELS):  # labels exist before the writers start
            s.assign([ITEMS[k]], name, user="setup")


def one_action(s: LabelStore, rng: random.Random, user: str) -> dict | None:
    """One random action; the acknowledgement to record, or None when refused (nothing to undo)."""
    r = rng.random()
    try:
        if r < 0.5:
            items = rng.sample(ITEMS, rng.randint(1, 12))
            exclude = items[:1] if rng.random() < 0.3 else []
            res = s.assign(items, rng.choice(LABELS).lower(), user=user, exclude=exclude, duration_ms=rng.randint(0, 5000))
            ack = {"kind": "assign", "items": [i for i in items if i not in exclude], "exclude": exclude}
        elif r < 0.6:
            items = rng.sample(ITEMS, rng.randint(1, 6))
            res = s.exclude(items, rng.choice(LABELS), user=user)
            ack = {"kind": "exclude", "items": items}
        elif r < 0.7:
            items = rng.sample(ITEMS, rng.randint(1, 6))
            res = s.unlabel(items, user=user)
            ack = {"kind": "unlabel", "items": items}
        elif r < 0.88:
            res = s.undo(user=user)
            ack = {"kind": "undo"}
        else:
            res = s.redo(user=user)
            ack = {"kind": "redo"}
    except LabelError as e:
        assert "nothing to" in str(e), e
        return None
    return {**ack, "event_id": res.event_id, "user": user}


def writer(path: str, user: str, actions: int, seed: int, *, store: LabelStore | None = None, out=None, synchronous: str = "FULL") -> list[dict]:
    own = store is None
    s = store or LabelStore(path, synchronous=synchronous)
    rng = random.Random(seed)
    acks: list[dict] = []
    try:
        while actions < 0 or len(acks) < actions:
            ack = one_action(s, rng, user)
            if ack is None:
                continue
            acks.append(ack)
            if out is not None:  # the process writer: the line is the acknowledgement
                out.write(json.dumps(ack) + "\n")
                out.flush()
    finally:
        if own:
            s.close()
    return acks


# ------------------------------------------------------------------------------------------
# The oracle: replays the events' intents with its own code


def oracle(events) -> tuple[dict[str, tuple[str, int]], set[tuple[str, str]]]:
    """Item -> (label name, event id) and (item, label name) exclusions, from intents alone."""
    label_name: dict[int, str] = {}
    items: dict[str, tuple[int, int]] = {}
    excl: set[tuple[str, int]] = set()
    diffs: dict[int, tuple[list, list]] = {}  # event -> (item changes, exclusion changes)

    for e in events:
        p = e.payload
        ic: list = []
        ec: list = []

        def set_item(i, new):
            old = items.get(i)
            if old != new:
                ic.append((i, old, new))
                if new is None:
                    items.pop(i, None)
                else:
                    items[i] = new

        def set_excl(i, lid, value):
            if ((i, lid) in excl) != value:
                ec.append((i, lid, value))
                (excl.add if value else excl.discard)((i, lid))

        if e.kind == "assign":
            lid = p["label_id"]
            label_name[lid] = p["label"]
            for i in p["items"]:
                if items.get(i, (None,))[0] != lid:
                    set_item(i, (lid, e.id))
                set_excl(i, lid, False)
            for i in p["exclude"]:
                if items.get(i, (None,))[0] == lid:
                    set_item(i, None)
                set_excl(i, lid, True)
        elif e.kind == "exclude":
            for i in p["items"]:
                if items.get(i, (None,))[0] == p["label_id"]:
                    set_item(i, None)
                set_excl(i, p["label_id"], True)
        elif e.kind == "unlabel":
            for i in p["items"]:
                set_item(i, None)
        elif e.kind in ("undo", "redo"):
            t_ic, t_ec = diffs[p["target"]]
            for i, before, after in t_ic:
                expect, goal = (after, before) if e.kind == "undo" else (before, after)
                if items.get(i) == expect:
                    set_item(i, goal)
            for i, lid, value in t_ec:
                set_excl(i, lid, (not value) if e.kind == "undo" else value)
        else:
            raise AssertionError(f"unexpected event kind {e.kind}")
        diffs[e.id] = (ic, ec)
    return {i: (label_name[lid], eid) for i, (lid, eid) in items.items()}, {(i, label_name[lid]) for i, lid in excl}


def verify(path: str, acks: list[dict], *, unacknowledged_ok: int = 0) -> dict:
    """Every acknowledged action is in the log (and at most ``unacknowledged_ok`` others: a writer
    killed after a commit but before it printed the acknowledgement); labels == replay."""
    with LabelStore(path) as s:
        assert s.check() == []
        events = []
        since = 0
        while batch := s.events(since=since, limit=5000):
            events += batch
            since = batch[-1].id
        by_id = {e.id: e for e in events}
        lost = [a for a in acks if a["event_id"] not in by_id]
        assert not lost, f"{len(lost)} acknowledged actions are missing, e.g. {lost[:3]}"
        for a in acks:
            e = by_id[a["event_id"]]
            assert (e.user, e.kind) == (a["user"], a["kind"])
            if a["kind"] == "assign":
                assert e.payload["items"] == a["items"] and e.payload["exclude"] == a["exclude"]
            elif a["kind"] in ("exclude", "unlabel"):
                assert e.payload["items"] == a["items"]
        writers_events = [e for e in events if e.user != "setup"]
        assert len(acks) <= len(writers_events) <= len(acks) + unacknowledged_ok, "the log holds actions nobody made"
        expect_items, expect_excl = oracle(events)
        snap = s.snapshot()
        at = {e.id: (e.user, e.at) for e in events}
        assert {i: (lab, by, t) for i, (lab, by, t) in snap.items.items()} == {i: (lab, *at[eid]) for i, (lab, eid) in expect_items.items()}
        assert {(i, n) for i, names in snap.exclusions.items() for n in names} == expect_excl
        if s.kind == "sqlite":
            conn = sqlite3.connect(path)
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            conn.close()
        return {"events": len(events), "acknowledged": len(acks), "lost": len(lost)}


def run_concurrent(path: str, *, threads: int, processes: int, actions: int, synchronous: str) -> dict:
    setup_store(path, synchronous=synchronous)
    acks: list[dict] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    shared = LabelStore(path, synchronous=synchronous)

    def run_thread(k: int) -> None:
        try:
            got = writer(path, f"thread-{k}", actions, seed=k, store=shared if k % 2 == 0 else None, synchronous=synchronous)
            with lock:
                acks.extend(got)
        except BaseException as e:  # surfaced below
            errors.append(e)

    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "writer", str(path), f"proc-{k}", str(actions), str(1000 + k), synchronous],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(processes)
    ]
    pool = [threading.Thread(target=run_thread, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    outs = [p.communicate(timeout=600) for p in procs]
    for t in pool:
        t.join()
    shared.close()
    seconds = time.perf_counter() - t0
    assert not errors, errors
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        acks += [json.loads(line) for line in out.splitlines()]
    assert len(acks) == (threads + processes) * actions
    figures = verify(path, acks)
    return {**figures, "writers": threads + processes, "actions_per_writer": actions, "seconds": round(seconds, 1)}


#: actions per writer in the default run: PostgreSQL's round trips on a 2-core machine take about
#: six times SQLite's, so it runs fewer there; the slow variant runs 500 on both
DEFAULT_ACTIONS = {"sqlite": 500, "postgresql": 100}


def test_concurrent_writers_lose_nothing(new_location, backend, record_property):
    """16 writers (8 threads, 8 processes) x 500 actions. synchronous=NORMAL keeps this quick; it
    changes only what a power cut could lose, and the slow variant runs with FULL fsync."""
    figures = run_concurrent(new_location(), threads=8, processes=8, actions=DEFAULT_ACTIONS[backend], synchronous="NORMAL")
    record_property("figures", figures)
    print("concurrency:", json.dumps(figures))
    assert figures["lost"] == 0


@pytest.mark.slow
def test_concurrent_writers_lose_nothing_with_full_fsync(new_location, record_property):
    figures = run_concurrent(new_location(), threads=8, processes=8, actions=500, synchronous="FULL")
    record_property("figures", figures)
    print("concurrency (FULL):", json.dumps(figures))
    assert figures["lost"] == 0


def kill_rounds(path: str, *, kills: int, seed: int = 0) -> dict:
    """Start a writer, let it acknowledge some actions, SIGKILL it mid-stream; repeat; verify."""
    setup_store(path)
    rng = random.Random(seed)
    acks: list[dict] = []
    for k in range(kills):
        proc = subprocess.Popen([sys.executable, __file__, "writer", str(path), f"victim-{k % 3}", "-1", str(seed * 1000 + k), "FULL"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        want = rng.randint(3, 40)
        got = 0
        deadline = time.monotonic() + 120
        while got < want and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acks.append(json.loads(line))
            got += 1
        time.sleep(rng.uniform(0, 0.02))  # land somewhere inside the next action
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=60)
        acks += [json.loads(line) for line in rest.splitlines() if line.endswith("}")]
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
        with LabelStore(path) as s:  # opens cleanly after every kill
            assert s.check() == []
    figures = verify(path, acks, unacknowledged_ok=kills)
    return {**figures, "kills": kills}


def test_sigkill_mid_stream_loses_no_acknowledged_action(new_location):
    figures = kill_rounds(new_location(), kills=8)
    print("kill test:", json.dumps(figures))
    assert figures["lost"] == 0


@pytest.mark.slow
def test_sigkill_many_times(new_location):
    figures = kill_rounds(new_location(), kills=60, seed=7)
    print("kill test (slow):", json.dumps(figures))
    assert figures["lost"] == 0


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "writer":
    _, _, db, who, n, sd, sync = sys.argv
    writer(db, who, int(n), int(sd), out=sys.stdout, synchronous=sync)
