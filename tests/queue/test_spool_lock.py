"""One queue per spool: a second ``QueueService`` (or ``correo serve
queue``) on a spool that a running queue holds refuses to start, naming the
folder and the holder's pid; the lock dies with its holder, however it ends."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from queue_support import MailstoreHandler, QueueProcess, make_config, start_smtp

from correo_server.queue.service import QueueService
from correo_server.queue.spoollock import LOCK_FILE, SpoolInUse
from correo_server.serve import CannotStart


async def test_a_second_queue_on_the_same_spool_refuses_to_start(harness):
    await harness.start()
    spool = harness.root / "spool"
    second = QueueService(harness.cfg, str(harness.config_dir), clock=harness.clock, linger=0.2)
    with pytest.raises(SpoolInUse) as info:
        await second.start()
    assert isinstance(info.value, CannotStart)  # `correo serve` prints it as one line and exits 1
    assert str(spool) in str(info.value) and f"pid {os.getpid()}" in str(info.value)
    assert (spool / LOCK_FILE).read_text().split()[0] == str(os.getpid())
    await second.stop()  # a refused start leaves nothing to stop, and touches nothing of the first

    # The first one is unharmed: it takes and delivers mail.
    replies = await harness.send("alice@example.com", ["bob@example.com"])
    assert all(r.startswith("250 ") for r in replies.values())
    await harness.settle()
    assert [r for r, _ in harness.mailstore.delivered] == ["bob@example.com"]

    # Once it has stopped, another may start.
    await harness.service.stop()
    assert (spool / LOCK_FILE).read_text() == ""  # no stale holder to report
    harness.service = second
    await second.start()
    assert second.lock.held


async def test_the_lock_of_a_sigkilled_queue_is_free_at_once(tmp_path, dns_zone):
    sink = MailstoreHandler()
    store = await start_smtp(sink, "127.0.0.1", 0, lmtp=True)
    cfg, config_dir = make_config(tmp_path, dns_port=dns_zone.port,
                                  mailstore_port=store.sockets[0].getsockname()[1], remote_port=25)
    orphan = QueueProcess(config_dir, tmp_path)
    await orphan.start()
    try:
        # A second `correo serve queue` on the same spool: exit 1, one clear line.
        second = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "correo_operator.cli", "serve", "queue", "--config",
                             str(config_dir)], capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert (f"the queue spool {tmp_path / 'spool'} is in use by another queue (pid {orphan.proc.pid})"
                in second.stderr), second.stderr
        assert "Traceback" not in second.stderr

        in_process = QueueService(cfg, str(config_dir), linger=0.2)
        with pytest.raises(SpoolInUse, match=f"pid {orphan.proc.pid}"):
            await in_process.start()

        orphan.kill()  # SIGKILL: no chance to let go; the kernel does
        await in_process.start()
        assert in_process.lock.held
        await in_process.stop()
    finally:
        if orphan.proc is not None and orphan.proc.poll() is None:
            orphan.kill()
        store.close()
