"""Memory bounded by design: hostile clients that hold transfers open, or
abort them over and over, do not grow the relay's resident memory beyond a
budget a user would notice, and what they took comes back when they go.

The relay runs in a process of its own (:mod:`hostile`), its ``VmRSS``
sampled while the attacks of issue 10 run (scaled down to keep the suite
quick): 10 connections to port 25, no login, each 6 MiB into DATA with no
final dot, then closed; three rounds.  Before the relay spooled DATA to a
file this held ~70 MiB per round and kept growing over rounds (glibc keeps
the freed heap); now each transfer keeps at most 256 KiB in memory."""
from __future__ import annotations

import asyncio

import pytest

from hostile import (MiB, Sampler, ServiceProcess, open_data_round, prelogin_literal, spool_files_open,  # noqa: E402
                     wait_closed)

CONNECTIONS = 10
SIZE = 6 * MiB
BUDGET = 40 * MiB  # over the idle relay, for ten transfers of 6 MiB held open at once (60 MiB of data)


@pytest.fixture
def relay(tmp_path):
    service = ServiceProcess("relay", tmp_path / "relay",
                             overrides={"max_connections_per_client": CONNECTIONS + 5})
    yield service
    service.stop()


class TestOpenDataOnPort25:
    def test_transfers_held_open_stay_within_the_budget_and_aborted_ones_give_memory_back(self, relay, tmp_path):
        port = relay.ports["smtp"]
        asyncio.run(open_data_round(port, 2, 1 * MiB))  # warm up: imports, first buffers
        wait_closed(relay)
        baseline = relay.rss()
        peaks, after = [], []
        for _ in range(3):
            with Sampler(relay.proc.pid) as sampler:
                asyncio.run(open_data_round(port, CONNECTIONS, SIZE))
                # an aborted transfer ends when its client closes, not at the idle timeout
                wait_closed(relay, timeout=60)
            peaks.append(sampler.peak)
            after.append(relay.rss())
        print(f"relay RSS: idle {baseline / MiB:.0f} MiB; peaks {[round(p / MiB) for p in peaks]} MiB; "
              f"after each round {[round(a / MiB) for a in after]} MiB")
        assert max(peaks) - baseline < BUDGET, "transfers held open grew the relay past its budget"
        assert after[-1] - baseline < BUDGET / 2, "aborted transfers left memory behind"
        assert after[-1] - after[0] < 8 * MiB, "memory grows round after round"
        assert spool_files_open(relay.proc.pid) == 0, "aborted transfers left their temporary files open"


@pytest.fixture
def mailstore(tmp_path):
    service = ServiceProcess("mailstore", tmp_path / "mailstore", overrides={"tls": False})
    yield service
    service.stop()


class TestPreLoginLiterals:
    def test_login_literals_of_26_mib_on_eleven_connections_pin_nothing(self, mailstore):
        port = mailstore.ports["imap"]

        async def attack() -> None:
            writers = await asyncio.gather(*(prelogin_literal(port, 26 * MiB) for _ in range(11)))
            for w in writers:
                w.close()

        baseline = mailstore.rss()
        with Sampler(mailstore.proc.pid) as sampler:
            asyncio.run(attack())
        print(f"mailstore RSS: idle {baseline / MiB:.0f} MiB; peak {sampler.peak / MiB:.0f} MiB under 11 x 26 MiB")
        assert sampler.peak - baseline < 20 * MiB


class TestMessageReaderSpooling:
    """The reader behind the relay's DATA: past its threshold the message
    is in an unlinked temporary file, byte for byte the same."""

    def lines(self, n: int) -> bytes:
        return b"".join(b"line %06d ..%s\r\n" % (i, b"x" * 60) for i in range(n))

    def test_a_message_past_the_threshold_goes_to_a_file_and_comes_back_the_same(self, tmp_path):
        from correo_server.relay.data import MessageReader

        data = self.lines(5000)
        reader = MessageReader(10 * MiB, 998, spool_over=64 * 1024, spool_dir=str(tmp_path))
        reader.feed_bytes(data[:len(data) // 2 - (len(data) // 2) % 77])
        reader.feed_bytes(data[len(data) // 2 - (len(data) // 2) % 77:])
        reader.finish()
        assert reader.spooled and reader._held == 0
        assert reader.content() == data
        reader.close()
        assert not list(tmp_path.iterdir()), "the temporary file has a name on disk"

    def test_a_small_message_stays_in_memory_and_a_refused_one_keeps_nothing(self, tmp_path):
        from correo_server.relay.data import MessageReader

        small = MessageReader(10 * MiB, 998, spool_over=64 * 1024)
        small.feed_bytes(b"Subject: x\r\n\r\nhi\r\n")
        assert not small.spooled and small.content() == b"Subject: x\r\n\r\nhi\r\n"
        big = MessageReader(100 * 1024, 998, spool_over=16 * 1024)
        big.feed_bytes(self.lines(3000))
        assert big.refusal() is not None and not big.spooled and big._held == 0


class TestLiteralsBudget:
    """Literals held in memory at once over all IMAP sessions have a budget:
    past it a client hears ``NO [LIMIT]`` before it sends (and tries again),
    instead of the mailstore growing with every client's APPEND."""

    async def test_an_append_past_the_budget_is_told_to_wait_and_succeeds_once_there_is_room(self, tmp_path):
        from correo_server.mailstore.service import MailstoreService

        from hardening_support import Raw, mailstore_config, write_directory

        config_dir = tmp_path / "config"
        write_directory(config_dir)
        service = MailstoreService(mailstore_config(config_dir, tmp_path / "mail", tls=False,
                                                    max_inflight_literal_bytes=100_000), str(config_dir))
        ports = await service.start()
        size = 80_000
        message = b"Subject: big\r\n\r\n" + b"x" * (size - 18) + b"\r\n"
        try:
            first, second = await Raw.connect(ports["imap"]), await Raw.connect(ports["imap"])
            for n, c in enumerate((first, second)):
                await c.line()
                await c.send(f"l{n} LOGIN alice@example.com alice-secret\r\n".encode())
                assert (await c.line()).startswith(f"l{n} OK".encode())
            await first.send(f"a APPEND INBOX {{{size}}}\r\n".encode())
            assert (await first.line()).startswith(b"+")
            await first.send(message[:size // 2])  # held open: the budget is taken
            await second.send(f"b APPEND INBOX {{{size}}}\r\n".encode())
            busy = await second.line()
            assert busy.startswith(b"b NO [LIMIT]"), busy
            await first.send(message[size // 2:] + b"\r\n")
            assert b"a OK" in await first.line()
            await second.send(f"c APPEND INBOX {{{size}}}\r\n".encode())
            assert (await second.line()).startswith(b"+")
            await second.send(message + b"\r\n")
            assert b"c OK" in await second.line()
            assert service.ctx.imap_literals.held == 0
            first.close()
            second.close()
        finally:
            await service.stop()


class TestRelayInflightBudget:
    async def test_a_message_past_the_in_flight_budget_gets_452_and_the_client_may_retry(self, tmp_path):
        """Messages read into memory for their checks and hand-off at once
        have a budget (``max_inflight_bytes``): past it, ``452 4.3.1``
        after the data, which a client retries (nothing was acknowledged)."""
        from correo_server.relay.service import RelayService

        from hardening_support import Raw, relay_config, write_directory

        write_directory(tmp_path)
        service = RelayService(relay_config(tmp_path, max_inflight_bytes=1_000_000), str(tmp_path),
                               handoff_timeout=5.0, grace=1.0)
        ports = await service.start()
        try:
            service.context.inflight_bytes = 999_000  # other sessions' messages being handed over
            client = await Raw.connect(ports["smtp"])
            assert (await client.reply())[0] == 220
            assert (await client.cmd("EHLO client.test"))[0] == 250
            assert (await client.cmd("MAIL FROM:<x@example.org>"))[0] == 250
            assert (await client.cmd("RCPT TO:<alice@example.com>"))[0] == 250
            assert (await client.cmd("DATA"))[0] == 354
            await client.send(b"Subject: x\r\n\r\n" + (b"y" * 70 + b"\r\n") * 80 + b".\r\n")
            code, lines = await client.reply()
            assert code == 452 and lines[0].startswith("4.3.1"), lines
            assert service.context.inflight_bytes == 999_000  # nothing of this message is counted still
            assert (await client.cmd("NOOP"))[0] == 250  # the session goes on
            client.close()
        finally:
            await service.stop()
