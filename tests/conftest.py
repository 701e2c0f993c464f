"""Fixtures every test folder may use. Each part has its own conftest.py beside
its tests for what only it needs."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _start_reaper():
    """The watchdog that kills what a test run left running, even a killed one (reaper.py)."""
    spec = importlib.util.spec_from_file_location("correo_test_reaper", Path(__file__).with_name("reaper.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.start()


_REAPER = _start_reaper()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return ROOT / "examples"
