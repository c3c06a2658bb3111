"""The wheel is one package, ``corral``, and works installed away from the checkout.

The repository keeps api/, pipeline/, storage/ and viewer/ at the top level; pyproject maps them
under ``corral``. These tests build the wheel from this checkout and look at what a user gets.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from tests.conftest import REPO
from tests.generated import write_set


def test_the_wheel_holds_one_top_level_package(corral_wheel):
    names = zipfile.ZipFile(corral_wheel).namelist()
    version = corral_wheel.name.split("-")[1]
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"corral", f"corral-{version}.dist-info"}, f"unexpected top-level entries: {sorted(tops)}"
    for pkg in ("corral/__init__.py", "corral/api/cli.py", "corral/pipeline/embed.py", "corral/storage/labels.py", "corral/viewer/index.html"):
        assert pkg in names, f"{pkg} is missing from the wheel"
    # nothing of the repository's own layout or of the tests leaks in
    assert not [n for n in names if n.startswith(("corral/tests/", "corral/_package/")) or "/__pycache__/" in n]
    entry = zipfile.ZipFile(corral_wheel).read(f"corral-{version}.dist-info/entry_points.txt").decode()
    assert "corral = corral.api.cli:main" in entry


def _fresh_env(root: Path, wheel: Path) -> Path:
    """A new virtual environment holding only the wheel (``--no-deps``). The dependencies are the
    test environment's own: its site-packages folder is added as a plain path entry, so its
    ``.pth`` hooks (the checkout's editable install) never run and the checkout is not importable."""
    venv = root / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, timeout=300, capture_output=True)
    return venv


def test_the_installed_wheel_embeds_and_maps_outside_the_checkout(corral_wheel, tmp_path):
    venv = _fresh_env(tmp_path, corral_wheel)
    site = str((venv / "lib").resolve())
    work = tmp_path / "work"
    write_set(work / "set", classes=3, poses=12)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=work, env=env, capture_output=True, text=True, timeout=600)

    corral = shutil.which("corral", path=str(venv / "bin"))
    assert corral and corral.startswith(str(venv)), "the wheel installed no corral command"
    r = run(corral, "--help")
    assert r.returncode == 0 and "embed" in r.stdout and "map" in r.stdout, r.stderr

    # the code and the viewer's files come from the install, not from the checkout
    probe = (
        "import json, corral, corral.api.cli, corral.viewer; from corral.api.app import viewer_dir; "
        "v = viewer_dir(); print(json.dumps({'corral': corral.__file__, 'cli': corral.api.cli.__file__, "
        "'viewer': str(v), 'index': (v / 'index.html').is_file(), 'css': (v / 'src' / 'viewer.css').is_file()}))"
    )
    r = run(str(venv / "bin" / "python"), "-c", probe)
    assert r.returncode == 0, r.stderr
    where = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("corral", "cli", "viewer"):
        path = str(Path(where[key]).resolve())
        assert path.startswith(site) and not path.startswith(str(REPO)), f"{key} came from {path}"
    assert where["index"] and where["css"]

    r = run(corral, "-q", "embed", str(work / "set" / "images"), "--workspace", "ws", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run(corral, "-q", "map", "--workspace", "ws", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    from corral.storage.maps import read_map

    m = read_map(work / "ws")
    assert m.points.num_rows == 36
    assert len({c for c in m.points.column("cluster").to_pylist() if c >= 0}) >= 2
