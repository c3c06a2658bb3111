"""numba's on-disk cache: a kernel compiled in one process is read back, not recompiled, in the next.

Each check runs in a fresh interpreter, as a user's commands do, with the cache in the test's own
folder (the real user cache is never touched). No timings: numba's own counters say whether a
function came from the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO

KERNEL = textwrap.dedent(
    """
    import json, sys
    from corral.pipeline import jitcache

    folder = jitcache.enable()
    import numba


    @numba.njit  # no cache=True here, as in umap-learn and fast_hdbscan
    def kernel(x):
        total = 0.0
        for i in range(x):
            total += i * 0.5
        return total


    kernel(10)
    print(json.dumps({
        "folder": str(folder),
        "hits": sum(kernel.stats.cache_hits.values()),
        "misses": sum(kernel.stats.cache_misses.values()),
    }))
    """
)


def _run(script: Path, env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, str(script)], env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "NUMBA_DISABLE_JIT")}
    env.update(extra)
    return env


def test_second_process_reads_the_kernel_from_the_cache(tmp_path: Path) -> None:
    script = tmp_path / "kernel_script.py"
    script.write_text(KERNEL)
    cache = tmp_path / "numba-cache"
    env = _env(NUMBA_CACHE_DIR=str(cache))

    first = _run(script, env)
    assert first["folder"] == str(cache)
    assert first == {"folder": str(cache), "hits": 0, "misses": 1}
    index = list(cache.rglob("kernel_script.kernel-*.nbi"))
    assert index, f"no numba index file in {cache}: {sorted(p.name for p in cache.rglob('*'))}"
    assert list(cache.rglob("kernel_script.kernel-*.nbc"))

    second = _run(script, env)
    assert second["hits"] == 1 and second["misses"] == 0


def test_default_folder_is_the_user_cache(tmp_path: Path) -> None:
    if sys.platform in ("win32", "darwin"):
        return  # the XDG folder is the Linux default; the others are their platforms' cache folders
    script = tmp_path / "kernel_script.py"
    script.write_text(KERNEL)
    out = _run(script, _env(XDG_CACHE_HOME=str(tmp_path / "xdg")))
    assert out["folder"] == str(tmp_path / "xdg" / "corral" / "numba")
    assert list((tmp_path / "xdg" / "corral" / "numba").rglob("*.nbi"))


def test_cli_enables_the_cache_before_the_map_libraries_load(tmp_path: Path) -> None:
    """Registering every command imports none of umap / fast_hdbscan / pynndescent, and the map
    command starts with numba's cache on (so their kernels, imported later, are cached)."""
    script = tmp_path / "cli_probe.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, os, sys
            from corral.api import cli
            from corral.pipeline.jitcache import LIBRARIES

            cli.build_parser()
            early = [m for m in LIBRARIES if m in sys.modules]
            seen = {}

            def probe(args):
                import numba
                seen.update(cached=getattr(numba.njit, "__corral_cached__", False), early=early,
                            loaded=[m for m in LIBRARIES if m in sys.modules], cache_dir=os.environ.get("NUMBA_CACHE_DIR"))
                return 0

            for name in ("map", "demo", "serve"):
                help_, add, _ = cli.COMMANDS[name]
                cli.COMMANDS[name] = (help_, add, probe)
            code = cli.main(["-q", "map", "--workspace", "unused"])
            print(json.dumps({"code": code, **seen}))
            """
        )
    )
    out = _run(script, _env(NUMBA_CACHE_DIR=str(tmp_path / "cache")))
    assert out == {"code": 0, "cached": True, "early": [], "loaded": [], "cache_dir": str(tmp_path / "cache")}


def test_python_dash_m_corral_is_the_same_command(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "corral", "--help"], env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "usage: corral" in proc.stdout
