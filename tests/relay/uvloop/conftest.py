"""Every test in this folder runs on uvloop, the event loop `correo serve`
uses (pytest-asyncio's loop-factory hook; the relay's fixtures come from
tests/relay/conftest.py)."""
from __future__ import annotations

import pytest

uvloop = pytest.importorskip("uvloop", reason="uvloop is a dependency of correo on Linux: pip install -e .")


def pytest_asyncio_loop_factories(config, item):
    return {"uvloop": uvloop.new_event_loop}
