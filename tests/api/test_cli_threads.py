"""The command line has OpenMP threads sleep while they wait, unless the user chose otherwise."""

from __future__ import annotations

import os

import pytest

from corral.api.cli import main


def test_waiting_threads_sleep_by_default(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert main(["models"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_a_policy_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert main(["models"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
