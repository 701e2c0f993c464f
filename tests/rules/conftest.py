"""Fixtures for the mail rules tests: a recording queue, a clock, and a
mailstore factory (``await start(mailboxes, **domain_settings)``)."""
from __future__ import annotations

import pytest

from rules_support import Clock, Mailstore, RecordingQueue


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def queue():
    q = RecordingQueue()
    await q.start()
    yield q
    await q.stop()


@pytest.fixture
async def start(tmp_path, queue, clock):
    running: list[Mailstore] = []

    async def go(mailboxes, **domain) -> Mailstore:
        store = Mailstore(tmp_path, queue, clock)
        running.append(store)
        return await store.start(mailboxes, **domain)

    yield go
    for store in running:
        await store.stop()
