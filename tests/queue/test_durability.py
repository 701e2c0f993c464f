"""``correo serve queue`` as a real process, killed with SIGKILL while mail
is flowing in: every message that got ``250`` is delivered, exactly once or
(if the kill fell between the mailstore's 250 and the state write) twice, and
the duplicates are counted."""
from __future__ import annotations

import asyncio
import random
import re
from collections import Counter

import pytest
from queue_support import MailstoreHandler, QueueProcess, after_restart, lmtp_send, make_config, message, start_smtp


@pytest.mark.e2e
async def test_sigkill_while_sending_loses_nothing_acknowledged(tmp_path, dns_zone, record_property):
    sink = MailstoreHandler()
    store = await start_smtp(sink, "127.0.0.1", 0, lmtp=True)
    store_port = store.sockets[0].getsockname()[1]
    _cfg, config_dir = make_config(tmp_path, dns_port=dns_zone.port, mailstore_port=store_port, remote_port=25)
    queue = QueueProcess(config_dir, tmp_path)
    await queue.start()

    acked: set[str] = set()
    refused = 0
    stop = asyncio.Event()
    counter = iter(range(10**6))
    reasons = Counter()

    async def sender(n: int) -> None:
        nonlocal refused
        while not stop.is_set():
            port = queue.lmtp_port
            if not port:
                await asyncio.sleep(0.02)
                continue
            k = next(counter)
            tag = f"m{k:05d}"
            rcpts = ["bob@example.com"] if k % 3 else ["bob@example.com", "alice@example.com"]
            try:
                replies = await lmtp_send(port, "someone@remote.test", rcpts,
                                          message(tag, body=f"message {tag}\n" + ("x" * 70 + "\n") * random.randint(1, 40)),
                                          timeout=5)
            except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
                reasons[type(exc).__name__] += 1
                refused += 1
                await asyncio.sleep(0.01)
                continue
            if all(r.startswith("250") for r in replies.values()):
                acked.add(tag)
            else:
                reasons[str(list(replies.values()))[:60]] += 1
                refused += 1

    senders = [asyncio.create_task(sender(n)) for n in range(6)]
    kills = 4
    time_marks = []
    loop = asyncio.get_running_loop()
    t_start = loop.time()
    for _ in range(kills):
        await asyncio.sleep(random.uniform(0.3, 0.7))
        queue.kill()
        await asyncio.sleep(0.05)
        await queue.start()
        time_marks.append(round(loop.time() - t_start, 2))
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*senders)

    def delivered() -> Counter:
        seen = Counter()
        for rcpt, msg in sink.delivered:
            m = re.search(rb"Subject: (m\d+)", msg.data)
            seen[(rcpt, m.group(1).decode())] += 1
        return seen

    expected = {("bob@example.com", t) for t in acked}
    expected |= {("alice@example.com", t) for t in acked if int(t[1:]) % 3 == 0}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline and not expected <= set(delivered()):
        await asyncio.sleep(0.1)
    seen = delivered()
    missing = sorted(expected - set(seen))
    twice = {k: v for k, v in seen.items() if v > 1}
    record_property("acknowledged", len(acked))
    record_property("duplicates", len(twice))
    print(f"\nacknowledged {len(acked)} messages, {refused} refused or cut by a kill, {kills} SIGKILLs, "
          f"{len(twice)} delivered twice; not acknowledged: {dict(reasons)}; restarts at {time_marks} s")
    assert not missing, f"{len(missing)} acknowledged deliveries lost: {missing[:5]}"
    assert all(v <= 2 for v in seen.values()), "delivered more than twice"
    # At most what was in flight at each kill: 4 deliveries (concurrencyPerDestination), 2 recipients each.
    assert len(twice) <= kills * 4 * 2, twice
    assert len(acked) > 50

    # Nothing left in the queue after a clean stop: a queue started on the
    # spool again finds no message to deliver.
    assert queue.terminate() == 0
    store.close()
    assert not after_restart(tmp_path / "spool", tmp_path)
