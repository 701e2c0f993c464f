"""Fixtures for the operator tests: the API double with correo's CRDs, an
injected clock and a fake data plane (helpers in ``opkit``)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from apidouble import DoubleKube, Store  # noqa: E402
from opkit import Clock, FakeDataPlane  # noqa: E402

from correo_operator import loading  # noqa: E402


@pytest.fixture
def store() -> Store:
    return Store(crds=loading.crds())


@pytest.fixture
def kube(store: Store) -> DoubleKube:
    return DoubleKube(store)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dataplane() -> FakeDataPlane:
    return FakeDataPlane()
