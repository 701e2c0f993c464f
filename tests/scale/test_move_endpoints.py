"""A shard's move endpoints (``mailstore.moveport``) on two real mailstore
shard services: only the proxy credential opens them; the fence ends the
mailbox's IMAP (``BYE``), POP3 (``-ERR [SYS/TEMP]``) and ManageSieve
(``BYE (TRYLATER)``) sessions, refuses
the proxy's logins for it and answers its mail with ``451 4.2.0``; the copy
streams between the shards (``moverun.copy``) and arrives with the same
UIDVALIDITY and UIDs; a shard never removes, nor is imported over, a
mailbox the directory gives it; after the flip the new shard serves it
and the old one removes its copy."""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import imaplib
import poplib
import smtplib
import socket
from pathlib import Path

import aiohttp
import pytest

from correo_operator import moverun
from correo_server import config as cfgmod
from correo_server import directory as dirmod
from correo_server import passwords, shards
from correo_server.mailstore.service import MailstoreService
from correo_server.mailstore import transfer

ALICE, BOB = "alice@example.com", "bob@example.com"
SECRET = "s" * 40


def write(folder: Path, alice_shard: int) -> None:
    h = passwords.hash_password("pw-alice-123", passwords.stable_salt("t"))
    entries = [dirmod.MailboxEntry(ALICE, password_hash=h, shard=alice_shard or None),
               dirmod.MailboxEntry(BOB, password_hash=h)]
    (folder / cfgmod.DIRECTORY_FILE).write_text(dirmod.dump(entries))


def stack(tmp_path: Path) -> tuple[Path, cfgmod.ServerConfig]:
    folder = tmp_path / "config"
    (folder / "proxy").mkdir(parents=True)
    (folder / "proxy" / "secret").write_text(SECRET + "\n")
    loop = "127.0.0.1"
    cfg = cfgmod.ServerConfig(
        name="t", hostname="mail.example.com", domains=(cfgmod.Domain("example.com"),),
        auth=cfgmod.AuthSettings(failure_delay_seconds=0.01, failure_delay_max_seconds=0.05),
        mailstore=cfgmod.MailstoreConfig(
            managesieve_enabled=True, proxy_secret_file="proxy/secret",
            shards=tuple(cfgmod.MailstoreShard(host=loop, listen=loop, lmtp=0, imap=0, pop3=0, managesieve=0, http=0,
                                               moves=0, data_dir=str(tmp_path / f"mail-{i}")) for i in range(2))),
        base_dir=str(folder))
    (folder / cfgmod.CONFIG_FILE).write_text(cfgmod.dump(cfg))
    write(folder, 0)
    return folder, cfgmod.load(folder)


def plain(user: str) -> bytes:
    return b"\0".join((user.encode(), b"correo-proxy", SECRET.encode()))


def deliver(port: int, subject: str) -> tuple[int, bytes]:
    with smtplib.LMTP("127.0.0.1", port) as lmtp:
        lmtp.ehlo_or_helo_if_needed()
        lmtp.mail("sender@elsewhere.test")
        code, text = lmtp.rcpt(ALICE)
        if code != 250:
            return code, text
        code, text = lmtp.data(f"Subject: {subject}\r\n\r\nbody\r\n".encode())
        return code, text


def read_until_ok(reader) -> bytes:
    """ManageSieve: lines up to the one that ends a response (OK, NO, BYE)."""
    while True:
        line = reader.readline()
        if not line or line.startswith((b"OK", b"NO", b"BYE")):
            return line


def imap_session(port: int) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.authenticate("PLAIN", lambda _: plain(ALICE))
    return imap


def uids(port: int) -> tuple[int, list[int]]:
    imap = imap_session(port)
    try:
        typ, data = imap.select("INBOX", readonly=True)
        validity = int(imap.response("UIDVALIDITY")[1][0])
        _, found = imap.uid("SEARCH", "ALL")
        return validity, [int(u) for u in found[0].split()]
    finally:
        imap.logout()


async def test_the_move_endpoints_fence_copy_and_hand_a_mailbox_over(tmp_path):
    folder, cfg = stack(tmp_path)
    services = [MailstoreService(shards.for_shard(cfg, i), str(folder)) for i in range(2)]
    ports = [await s.start() for s in services]
    session = aiohttp.ClientSession()
    try:
        clients = {i: moverun.ShardClient(i, f"http://127.0.0.1:{ports[i]['moves']}", SECRET, session)
                   for i in range(2)}
        for i in range(5):
            assert (await asyncio.to_thread(deliver, ports[0]["lmtp"], f"m{i}"))[0] == 250
        validity, before = await asyncio.to_thread(uids, ports[0]["imap"])
        assert len(before) == 5

        # only the proxy credential opens the endpoints
        async with session.get(f"http://127.0.0.1:{ports[0]['moves']}/internal/moves") as r:
            assert r.status == 401
        async with session.get(f"http://127.0.0.1:{ports[0]['moves']}/internal/moves",
                               headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401

        # the preflight: a target holding mail no move put there is said before anything is fenced
        assert await clients[1].check(ALICE) == ""
        stray = tmp_path / "mail-1" / ALICE / "cur"
        stray.mkdir(parents=True)
        assert "no move put here" in await clients[1].check(ALICE)
        stray.parent.joinpath("cur").rmdir()
        stray.parent.rmdir()
        assert "owns" in await clients[0].check(ALICE)
        with pytest.raises(moverun.MoveFailed, match="409"):
            await clients[1].fence(ALICE, 0)  # only the owner is fenced

        # sessions open when the fence comes
        imap = await asyncio.to_thread(imap_session, ports[0]["imap"])
        await asyncio.to_thread(imap.select, "INBOX")
        pop = await asyncio.to_thread(poplib.POP3, "127.0.0.1", ports[0]["pop3"], timeout=30)
        await asyncio.to_thread(pop._shortcmd, "AUTH PLAIN " + base64.b64encode(plain(ALICE)).decode())
        sieve = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", ports[0]["managesieve"]), 20)
        sieve_in = sieve.makefile("rb")
        await asyncio.to_thread(read_until_ok, sieve_in)  # the greeting
        sieve.sendall(f'AUTHENTICATE "PLAIN" "{base64.b64encode(plain(ALICE)).decode()}"\r\n'.encode())
        assert (await asyncio.to_thread(read_until_ok, sieve_in)).startswith(b"OK")
        fence = await clients[0].fence(ALICE, 1)
        assert fence["to"] == 1 and (await clients[0].observe())["fenced"][ALICE]["fence"] == fence["fence"]

        def imap_told() -> bytes:
            with pytest.raises(imaplib.IMAP4.abort):
                imap.noop()
            return b" ".join(imap.untagged_responses.get("BYE", []))
        assert b"being moved to another server" in await asyncio.to_thread(imap_told)
        with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
            await asyncio.to_thread(pop.stat)
        told = await asyncio.to_thread(read_until_ok, sieve_in)
        assert told.startswith(b"BYE (TRYLATER)") and b"being moved" in told
        sieve.close()
        with pytest.raises(imaplib.IMAP4.error, match=r"UNAVAILABLE.*being moved"):
            await asyncio.to_thread(imap_session, ports[0]["imap"])

        def pop3_login() -> None:
            again = poplib.POP3("127.0.0.1", ports[0]["pop3"], timeout=30)
            try:
                again._shortcmd("AUTH PLAIN " + base64.b64encode(plain(ALICE)).decode())
            finally:
                again.close()
        with pytest.raises(poplib.error_proto, match=r"SYS/TEMP.*being moved"):  # what the proxy passes on
            await asyncio.to_thread(pop3_login)
        code, text = await asyncio.to_thread(deliver, ports[0]["lmtp"], "during")
        assert (code, text[:5]) == (451, b"4.2.0")

        # the owner is never removed, nor imported over
        with pytest.raises(moverun.MoveFailed, match="409"):
            await clients[0].remove(ALICE)
        with pytest.raises(moverun.MoveFailed, match="409"):
            await clients[0].copy_from(clients[1], ALICE, fence["fence"])

        done = await moverun.copy(clients[0], clients[1], ALICE, fence["fence"])
        assert done["summary"]["messages"] == 5
        seen = await clients[1].observe()
        assert seen["imported"][ALICE]["from"] == 0 and seen["imported"][ALICE]["digest"] == done["digest"]

        # the flip: both shards read the new directory
        write(folder, 1)

        async def served_by_1():
            for _ in range(100):
                try:
                    return await asyncio.to_thread(uids, ports[1]["imap"])
                except imaplib.IMAP4.error:
                    await asyncio.sleep(0.1)
            raise AssertionError("shard 1 never served alice")
        assert await served_by_1() == (validity, before)
        assert (await asyncio.to_thread(deliver, ports[1]["lmtp"], "after"))[0] == 250
        for _ in range(100):
            try:
                await clients[0].remove(ALICE)
                break
            except moverun.MoveFailed:
                await asyncio.sleep(0.1)
        assert not (tmp_path / "mail-0" / ALICE).exists()
        await clients[1].settle(ALICE)
        assert (await clients[1].observe())["imported"] == {}
        assert not (await clients[0].observe())["fenced"]
        assert transfer.read_marker(tmp_path / "mail-1" / ALICE, transfer.IN_MARKER) is None
    finally:
        await session.close()
        for s in services:
            await s.stop()


async def test_with_tls_the_move_endpoints_speak_tls_and_the_orchestrator_pins_the_stack_s_certificate(tmp_path):
    from correo_operator.local import keys

    folder, cfg = stack(tmp_path)
    keys.self_signed(folder / "tls" / "tls.crt", folder / "tls" / "tls.key", ["mail.example.com"])
    other = tmp_path / "other"
    keys.self_signed(other / "tls.crt", other / "tls.key", ["mail.example.com"])
    cfg = dataclasses.replace(cfg, tls=cfgmod.TLSFiles())
    (folder / cfgmod.CONFIG_FILE).write_text(cfgmod.dump(dataclasses.replace(cfg, base_dir=None)))
    service = MailstoreService(shards.for_shard(cfgmod.load(folder), 0), str(folder))
    ports = await service.start()
    session = aiohttp.ClientSession()
    try:
        base = f"https://127.0.0.1:{ports['moves']}"
        own = moverun.ShardClient(0, base, SECRET, session, moverun.pinned((folder / "tls" / "tls.crt").read_text()))
        assert (await own.observe())["shard"] == 0
        stranger = moverun.ShardClient(0, base, SECRET, session, moverun.pinned((other / "tls.crt").read_text()))
        assert await stranger.observe() is None  # another certificate: not our shard, nothing sent
        with pytest.raises(aiohttp.ServerFingerprintMismatch):
            await stranger.fence(ALICE, 1)
        plain_http = moverun.ShardClient(0, f"http://127.0.0.1:{ports['moves']}", SECRET, session)
        assert await plain_http.observe() is None  # no plain text on a TLS stack
        async with session.get(f"http://127.0.0.1:{ports['http']}/internal/moves") as r:
            assert r.status == 404  # never on the side port
    finally:
        await session.close()
        await service.stop()
