"""The notebooks run top to bottom, offline, on the shared data (their own asserts check results);
they are skipped when the evaluation sets they read are missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED, shared_data

NOTEBOOKS = REPO / "notebooks"


def _run(name: str, timeout: int) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    os.environ.setdefault("CORRAL_SHARED", str(SHARED))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_quickstart_notebook_runs():
    shared_data("coil20", "images")
    _run("quickstart.ipynb", timeout=600)


@pytest.mark.slow
def test_efficiency_notebook_runs():
    shared_data("coil20", "images")
    shared_data("orl_faces", "images")
    _run("efficiency.ipynb", timeout=1800)


def test_every_notebook_is_tested():
    names = {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    assert names == {"quickstart.ipynb", "efficiency.ipynb"}
