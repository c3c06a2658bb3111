"""Embed and map jobs started from the viewer, each run as a ``corral`` subprocess.

A subprocess keeps the server responsive (model inference, numba compiling) and lets a job be
cancelled. Progress comes from the command's progress bar on stderr; its result is the JSON
object it prints as its last stdout line. A job's full log is kept in ``cache/jobs/<id>.log``.
"""

from __future__ import annotations

import difflib
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.api.errors import ApiError, Forbidden, NotFound
from corral.api.inputs import check_name
from corral.storage.workspace import Workspace

logger = logging.getLogger(__name__)

KINDS = ("embed", "map")
#: What a map job takes besides the map's own options (:class:`corral.pipeline.mapping.MapConfig`).
MAP_RUN_OPTIONS = ("embeddings", "update", "with_labels")


def _map_option_names() -> tuple[str, ...]:
    from dataclasses import fields

    from corral.pipeline.mapping import MapConfig

    names = [f.name for f in fields(MapConfig)]
    return ("embeddings", "name", "update", "with_labels", *(n for n in names if n != "name"))


def _embed_option_names() -> tuple[str, ...]:
    from dataclasses import fields

    from corral.pipeline.embed import EmbedConfig

    return tuple(f.name for f in fields(EmbedConfig) if not f.metadata.get("job"))


def _server_only(cls: type) -> dict[str, str]:
    """The options of ``cls`` a job may not set, with the reason (a file or a limit of the server's own)."""
    from dataclasses import fields

    return {f.name: f.metadata["job"] for f in fields(cls) if f.metadata.get("job")}


#: The options each kind of job takes (the flags of the command it runs), from the stage's options type.
JOB_OPTIONS: dict[str, tuple[str, ...]] = {"embed": _embed_option_names(), "map": _map_option_names()}


def _embed_server_only() -> dict[str, str]:
    from corral.pipeline.embed import EmbedConfig

    return _server_only(EmbedConfig)


#: Options of a stage a job may not set, each with the reason: they name a file or a limit of the server's own.
SERVER_ONLY: dict[str, dict[str, str]] = {"embed": _embed_server_only(), "map": {}}
_PROGRESS = re.compile(r"(\d+)/(\d+)\s*\[")
_TAIL = 4000
#: runs the ``corral`` command line in a fresh interpreter (``-m corral.api.cli`` would load the module
#: twice: once as __main__ without the registered commands)
CLI_BOOT = "import sys; from corral.api.cli import main; sys.exit(main(sys.argv[1:]))"


@dataclass
class Job:
    id: str
    kind: str
    args: list[str]
    user: str
    source: str | None = None
    status: str = "queued"  # queued | running | done | failed | cancelled
    done: int = 0
    total: int = 0
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    tail: str = ""
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "source": self.source,
            "user": self.user,
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "fraction": round(self.done / self.total, 4) if self.total else None,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "seconds": round((self.ended_at or time.time()) - self.started_at, 1),
            "result": self.result,
            "error": self.error,
            "log_tail": self.tail[-1500:],
        }


class JobManager:
    """Starts, tracks and cancels jobs for one workspace."""

    def __init__(self, workspace: Workspace, *, source_roots: list[Path], allow_any_source: bool, max_jobs: int = 50):
        self.workspace = workspace
        self.source_roots = source_roots
        self.allow_any_source = allow_any_source
        self.max_jobs = max_jobs
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.log_dir = workspace.cache_dir / "jobs"

    def check_source(self, source: str) -> str:
        """A source folder a job may read: an existing folder inside an allowed root.

        Outside local mode every folder that may not be read gets one answer (403, the same words):
        one that exists outside the roots, one that does not exist (inside or out), a file, a link
        that leads out. Otherwise a curator could map the server's folders by telling 400 "no such
        folder" from 403 "outside". Local mode, whose user owns the machine, says which it is.
        """
        if not source or not isinstance(source, str):
            raise ApiError("source: give the folder of images to embed")
        if source.startswith("s3://"):
            if not self.allow_any_source:
                raise Forbidden("source: S3 sources are allowed only in local mode or from the command line")
            return source
        p = Path(source).expanduser()
        if not p.is_absolute():
            raise ApiError(f"source={source!r}: give an absolute folder path")
        try:
            resolved: Path | None = p.resolve()  # links followed: the folder as it will be read
        except (OSError, RuntimeError):  # a loop of links, a path the system cannot walk
            resolved = None
        if self.allow_any_source:
            if resolved is None or not resolved.is_dir():
                raise ApiError(f"source={source!r}: no such folder on the server")
            return str(resolved)
        inside = resolved is not None and any(resolved == r or r in resolved.parents for r in self.source_roots)
        if resolved is None or not inside or not resolved.is_dir():  # the roots are checked first: nothing outside them is looked at
            roots = ", ".join(str(r) for r in self.source_roots) or "none configured"
            raise Forbidden(f"source={source!r} is not a folder this server may read: it must be an existing folder inside {roots}; check the path, or start the server with --source-root")
        return str(resolved)

    def start(self, kind: str, *, user: str, source: str | None = None, options: dict[str, Any] | None = None) -> Job:
        """Start an ``embed`` (needs ``source``) or ``map`` job."""
        if kind not in KINDS:
            raise ApiError(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
        opts = options or {}
        for name, why in SERVER_ONLY[kind].items():
            if name in opts:
                raise ApiError(f"options.{name}: a job cannot set {name}: {why}; give it to corral {kind} on the server", status=422)
        unknown = sorted(str(k) for k in set(opts) - set(JOB_OPTIONS[kind]))
        if unknown:
            # a misspelt option would otherwise vanish and the job run with the default
            close = difflib.get_close_matches(unknown[0], JOB_OPTIONS[kind], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ApiError(f"options {', '.join(unknown)[:200]}{hint}: {'an' if kind == 'embed' else 'a'} {kind} job takes {', '.join(JOB_OPTIONS[kind])}", status=422)
        ws = str(self.workspace.root)
        if kind == "embed":
            flags = _embed_args(opts)  # the options are checked before the source: neither depends on the other
            src = self.check_source(source or "")
            args = ["embed", src, "--workspace", ws, *flags]
        else:
            src = None
            args = ["map", "--workspace", ws, *_map_args(opts)]
        with self._lock:
            if any(j.status in ("queued", "running") for j in self._jobs.values()):
                raise ApiError("another job is running; wait for it to finish or cancel it", status=409)
            job = Job(id=f"job-{next(self._ids)}-{int(time.time())}", kind=kind, args=args, user=user, source=src)
            self._jobs[job.id] = job
            self._trim()
        try:
            threading.Thread(target=self._run, args=(job,), name=f"corral-{job.id}", daemon=True).start()
        except RuntimeError as e:  # no thread to run it in: the job must not stay queued
            self._finish(job, "failed", f"could not start: {e}")
            raise ApiError("the server cannot start a job now (no thread available); try again later", status=503) from None
        return job

    def _trim(self) -> None:
        finished = [j for j in self._jobs.values() if j.status not in ("queued", "running")]
        for j in sorted(finished, key=lambda j: j.started_at)[: max(0, len(self._jobs) - self.max_jobs)]:
            self._jobs.pop(j.id, None)

    def _run(self, job: Job) -> None:
        """The job's thread. Whatever goes wrong, the job ends failed with the reason: it never stays
        "queued" or "running" (which would refuse every later job)."""
        try:
            self._execute(job)
        except Exception as e:  # a fault of ours: say so, keep the traceback in the server log
            logger.exception("job %s: unexpected error", job.id)
            if job.proc is not None and job.proc.poll() is None:
                _stop(job.proc)
            self._finish(job, "failed", f"the server could not run the job ({type(e).__name__}; see the server log)")

    def _finish(self, job: Job, status: str, error: str | None = None) -> bool:
        """End a job that has not ended yet; False when it already had (cancelled meanwhile)."""
        with self._lock:
            if job.status not in ("queued", "running"):
                return False
            job.status, job.ended_at = status, time.time()
            if error is not None:
                job.error = error[:500]
        logger.info("job %s %s (%s) in %.1fs%s", job.id, status, job.kind, job.ended_at - job.started_at, f": {error}" if error else "")
        return True

    def _execute(self, job: Job) -> None:
        log_path = self.log_dir / f"{job.id}.log"
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "w", encoding="utf-8", errors="replace")
        except OSError as e:  # a read-only workspace, a full disk, a file in the way
            self._finish(job, "failed", f"could not start: the job log folder cache/jobs in the workspace is not writable ({e.strerror or e})")
            return
        with log:
            log.write("$ corral " + " ".join(job.args) + "\n")
            cmd = [sys.executable, "-c", CLI_BOOT, *job.args]
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            try:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(Path(__file__).resolve().parents[1]))
            except (OSError, ValueError) as e:
                self._finish(job, "failed", f"could not start the corral command ({getattr(e, 'strerror', None) or e})")
                return
            with self._lock:
                job.proc = proc
                cancelled = job.status == "cancelled"  # cancelled while the process was starting
                if not cancelled:
                    job.status = "running"
            if cancelled:
                _stop(proc)
                return
            out_lines: list[str] = []
            t = threading.Thread(target=lambda: out_lines.extend(proc.stdout.read().decode("utf-8", "replace").splitlines()), daemon=True)  # type: ignore[union-attr]
            t.start()
            self._follow_stderr(job, log)
            rc = proc.wait()
            t.join(timeout=5)
            log.write("\n".join(out_lines) + "\n")
        if rc == 0:
            result = None
            for line in reversed(out_lines):
                try:
                    result = json.loads(line)
                    break
                except ValueError:
                    continue
            with self._lock:
                if job.status == "running":
                    job.result, job.done = result, job.total or job.done
            self._finish(job, "done")
        else:
            lines = [ln for ln in job.tail.splitlines() if ln.strip()]
            self._finish(job, "failed", lines[-1] if lines else f"exit code {rc}")

    def _follow_stderr(self, job: Job, log: Any) -> None:
        buf = b""
        if job.proc is None or job.proc.stderr is None:
            raise RuntimeError(f"job {job.id} has no stderr pipe to follow")
        stream = job.proc.stderr
        while True:
            chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
            if not chunk:
                break
            buf += chunk
            text = chunk.decode("utf-8", "replace")
            log.write(text)
            job.tail = (job.tail + text.replace("\r", "\n"))[-_TAIL:]
            found = list(_PROGRESS.finditer(buf[-2000:].decode("utf-8", "replace")))
            m = found[-1] if found else None  # the latest progress line
            if m:
                job.done, job.total = int(m.group(1)), int(m.group(2))
            buf = buf[-4000:]
        log.flush()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [j.public() for j in sorted(self._jobs.values(), key=lambda j: j.started_at, reverse=True)]

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    def cancel(self, job_id: str) -> Job:
        """Stop a job: one still queued never starts its process, a running one is terminated."""
        job = self.get(job_id)
        with self._lock:
            if job.status not in ("queued", "running"):
                return job
            job.status, job.ended_at = "cancelled", time.time()
            proc = job.proc
        if proc is not None:
            _stop(proc)
        return job

    def shutdown(self) -> None:
        for job in list(self._jobs.values()):
            if job.status == "running" and job.proc is not None:
                job.proc.terminate()


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _map_args(opts: dict[str, Any]) -> list[str]:
    """``corral map`` flags for a map job's options, checked by :class:`MapConfig` itself, so that a
    bad value gets the words the command line and Python give it (422)."""
    from corral.api.flags import to_args
    from corral.pipeline.mapping import MapConfig
    from corral.pipeline.options import from_mapping

    args: list[str] = []
    if opts.get("embeddings"):
        args += ["--embeddings", _opt_str("embeddings", opts["embeddings"])]
    for flag in ("update", "with_labels"):
        if not isinstance(opts.get(flag, False), bool):
            raise ApiError(f"options.{flag}={opts[flag]!r:.40}: must be true or false", status=422)
    if opts.get("update") and opts.get("with_labels"):
        raise ApiError("options: update places new items on a map as it is, with_labels makes a new map: use one of them", status=422)
    args += ["--update"] if opts.get("update") else []
    args += ["--with-labels"] if opts.get("with_labels") else []
    try:
        config = from_mapping(MapConfig, {k: v for k, v in opts.items() if k not in MAP_RUN_OPTIONS}, what="a map option")
    except (ValueError, TypeError) as e:
        raise ApiError(str(e)[:500], status=422) from None
    return args + to_args(config)


def _embed_args(opts: dict[str, Any]) -> list[str]:
    """``corral embed`` flags for an embed job's options, checked by :class:`EmbedConfig` itself, so
    that a bad value gets the words the command line and Python give it (422)."""
    from corral.api.flags import to_args
    from corral.pipeline.embed import EmbedConfig
    from corral.pipeline.options import from_mapping

    try:
        config = from_mapping(EmbedConfig, opts, what="an embed option")
    except (ValueError, TypeError) as e:
        raise ApiError(str(e)[:500], status=422) from None
    return to_args(config)


def _opt_str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 200 or value.startswith("-"):
        raise ApiError(f"options.{name}={value!r:.80}: expected a short name")
    return check_name(value, f"options.{name}")  # it becomes a folder name: no NUL, at most 255 bytes
