"""POP3 with Python's poplib against the real server: reading, deleting,
unique ids, locking, TLS, and what bad input gets."""
from __future__ import annotations

import base64
import poplib
import socket
import ssl
import time

import pytest

from .delivery_support import ALICE, BOB, CAROL, PASSWORDS, lmtp_deliver


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def message(n: int) -> bytes:
    return (f"From: sender@example.org\r\nTo: alice@example.com\r\nSubject: message {n}\r\n"
            f"Message-ID: <m{n}@example.org>\r\n\r\nbody line 1 of {n}\r\n.dot line\r\nbody line 3\r\n").encode()


def deliver(mailstore, n: int = 3, rcpt: str = ALICE) -> None:
    for i in range(1, n + 1):
        assert lmtp_deliver(mailstore.ports["lmtp"], "sender@example.org", [rcpt], message(i)).replies[rcpt][0] == 250


def login(mailstore, user: str = ALICE, port: str = "pop3") -> poplib.POP3:
    pop = poplib.POP3("127.0.0.1", mailstore.ports[port], timeout=30)
    pop.user(user)
    pop.pass_(PASSWORDS[user])
    return pop


def eventually(fn, check=lambda result: True, timeout: float = 5.0):
    """``fn()`` until it returns something ``check`` accepts without raising
    (a session the server has not finished closing yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = fn()
            if check(result):
                return result
        except (poplib.error_proto, OSError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


class Raw:
    """A line-at-a-time client for what poplib will not send."""

    def __init__(self, port: int, context: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        if context is not None:
            sock = context.wrap_socket(sock)
        self.sock = sock
        self.file = sock.makefile("rwb")
        self.greeting = self.file.readline()

    def cmd(self, line: bytes | str) -> bytes:
        if isinstance(line, str):
            line = line.encode()
        self.file.write(line + b"\r\n")
        self.file.flush()
        return self.file.readline()

    def multiline(self) -> list[bytes]:
        lines = []
        while (line := self.file.readline()) != b".\r\n":
            assert line, "connection closed in a multi-line reply"
            lines.append(line)
        return lines

    def close(self) -> None:
        self.sock.close()


class TestReading:
    def test_stat_list_retr_top(self, mailstore):
        deliver(mailstore)
        pop = login(mailstore)
        stored = [mailstore.read(ALICE, m.uid) for m in mailstore.inbox(ALICE)[1]]
        assert pop.stat() == (3, sum(len(s) for s in stored))
        _, listing, _ = pop.list()
        assert listing == [f"{i} {len(s)}".encode() for i, s in enumerate(stored, 1)]
        assert pop.list(2).split() == [b"+OK", b"2", str(len(stored[1])).encode()]
        _, lines, octets = pop.retr(2)
        assert b"\r\n".join(lines) + b"\r\n" == stored[1]
        assert b".dot line" in lines  # dot-stuffed on the wire, unstuffed by poplib
        _, top, _ = pop.top(1, 1)
        header = stored[0].split(b"\r\n\r\n")[0].split(b"\r\n")
        assert top == header + [b"", b"body line 1 of 1"]
        _, top0, _ = pop.top(1, 0)
        assert top0 == header + [b""]
        assert pop.noop().startswith(b"+OK")
        pop.quit()
        # RETR made message 2 \Seen for IMAP (QUIT commits it), TOP did not touch message 1
        flags = [m.flags for m in mailstore.inbox(ALICE)[1]]
        assert flags == [frozenset(), frozenset({"\\Seen"}), frozenset()]
        assert mailstore.ctx.metrics.value("mailstore_pop3_messages_retrieved_total") == 1

    def test_empty_maildrop(self, mailstore):
        pop = login(mailstore, BOB)
        assert pop.stat() == (0, 0)
        assert pop.list()[1] == []
        assert pop.uidl()[1] == []
        with pytest.raises(poplib.error_proto, match="no such message"):
            pop.retr(1)
        pop.quit()


class TestDeleting:
    def test_dele_rset_and_update_on_quit(self, mailstore):
        deliver(mailstore)
        pop = login(mailstore)
        assert pop.dele(1).startswith(b"+OK")
        assert pop.stat()[0] == 2
        with pytest.raises(poplib.error_proto, match="deleted"):
            pop.retr(1)
        with pytest.raises(poplib.error_proto):
            pop.dele(1)
        assert pop.list()[1][0].startswith(b"2 ")  # numbers do not shift
        pop.rset()
        assert pop.stat()[0] == 3
        pop.dele(2)
        pop.dele(3)
        subjects_before = [mailstore.read(ALICE, m.uid) for m in mailstore.inbox(ALICE)[1]]
        assert len(subjects_before) == 3  # nothing removed before QUIT
        assert b"1 messages left" in pop.quit()
        remaining = mailstore.inbox(ALICE)[1]
        assert len(remaining) == 1 and b"Subject: message 1\r\n" in mailstore.read(ALICE, remaining[0].uid)

    def test_no_update_without_quit(self, mailstore):
        deliver(mailstore, 2)
        pop = login(mailstore)
        pop.dele(1)
        pop.close()  # dropped connection: RFC 1939 says nothing is removed
        pop = eventually(lambda: login(mailstore))  # and the lock is released
        assert pop.stat()[0] == 2
        pop.quit()


class TestUniqueIds:
    def test_uidl_matches_store_uids_and_survives_sessions_and_restarts(self, start_mailstore):
        mailstore = start_mailstore()
        deliver(mailstore, 3)
        uidvalidity, messages = mailstore.inbox(ALICE)
        expected = [f"{m.uid:08X}{uidvalidity:08X}".encode() for m in messages]
        pop = login(mailstore)
        _, listing, _ = pop.uidl()
        assert [line.split()[1] for line in listing] == expected
        assert pop.uidl(3).split()[2] == expected[2]
        pop.dele(1)
        pop.quit()

        pop = login(mailstore)  # another session: same ids, numbers renumbered
        assert [line.split()[1] for line in pop.uidl()[1]] == expected[1:]
        pop.quit()

        mailstore.stop()
        mailstore = start_mailstore()  # same configuration folder and data
        deliver(mailstore, 1)
        pop = login(mailstore)
        ids = [line.split()[1] for line in pop.uidl()[1]]
        assert ids[:2] == expected[1:]
        assert ids[2] not in expected
        pop.quit()


class TestLocking:
    def test_second_session_gets_in_use(self, mailstore):
        deliver(mailstore, 1)
        first = login(mailstore)
        second = poplib.POP3("127.0.0.1", mailstore.ports["pop3"], timeout=30)
        second.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            second.pass_(PASSWORDS[ALICE])
        # another mailbox is not locked, and the refused session may try again
        second.user(BOB)
        assert second.pass_(PASSWORDS[BOB]).startswith(b"+OK")
        second.quit()
        first.quit()
        third = login(mailstore)
        assert third.stat()[0] == 1
        third.quit()


class TestAuthentication:
    def test_wrong_password_and_suspended_get_auth_code(self, mailstore):
        pop = poplib.POP3("127.0.0.1", mailstore.ports["pop3"], timeout=30)
        pop.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Authentication failed"):
            pop.pass_("wrong")
        pop.user(CAROL)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\].*suspended"):
            pop.pass_(PASSWORDS[CAROL])
        pop.user("nobody@example.com")
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Authentication failed"):
            pop.pass_("x")
        # third failure in the session: the server closes the connection
        with pytest.raises((poplib.error_proto, EOFError, ConnectionError, OSError)):
            pop.noop()
        metrics = mailstore.ctx.metrics
        assert metrics.value("mailstore_logins_total", protocol="pop3", result="failed") == 3

    def test_auth_plain_with_and_without_initial_response(self, mailstore):
        token = base64.b64encode(f"\0{ALICE}\0{PASSWORDS[ALICE]}".encode()).decode()
        raw = Raw(mailstore.ports["pop3"])
        assert raw.cmd(f"AUTH PLAIN {token}").startswith(b"+OK Logged in")
        assert raw.cmd("QUIT").startswith(b"+OK")
        raw.close()
        raw = Raw(mailstore.ports["pop3"])
        assert raw.cmd("AUTH PLAIN") == b"+ \r\n"
        assert raw.cmd("*").startswith(b"-ERR")  # cancelled
        assert raw.cmd("AUTH PLAIN") == b"+ \r\n"
        assert raw.cmd("not base64!").startswith(b"-ERR [AUTH]")
        assert raw.cmd("AUTH PLAIN") == b"+ \r\n"
        assert raw.cmd(token).startswith(b"+OK")
        assert raw.cmd("STAT").startswith(b"+OK 0 0")
        raw.close()

    def test_capa_before_and_after_login(self, mailstore):
        pop = poplib.POP3("127.0.0.1", mailstore.ports["pop3"], timeout=30)
        caps = pop.capa()
        for cap in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "STLS"):
            assert cap in caps, cap
        assert caps["SASL"] == ["PLAIN"]
        pop.user(ALICE)
        pop.pass_(PASSWORDS[ALICE])
        caps = pop.capa()
        assert "USER" not in caps and "STLS" not in caps and "UIDL" in caps
        pop.quit()


class TestTLS:
    def test_stls_then_login(self, mailstore):
        pop = poplib.POP3("127.0.0.1", mailstore.ports["pop3"], timeout=30)
        pop.stls(client_tls())
        assert "STLS" not in pop.capa()
        with pytest.raises(poplib.error_proto, match="Already using TLS"):
            pop._shortcmd("STLS")
        pop.user(ALICE)
        assert pop.pass_(PASSWORDS[ALICE]).startswith(b"+OK")
        pop.quit()

    def test_implicit_tls_port(self, mailstore):
        deliver(mailstore, 1)
        pop = poplib.POP3_SSL("127.0.0.1", mailstore.ports["pop3s"], context=client_tls(), timeout=30)
        assert "STLS" not in pop.capa()
        pop.user(ALICE)
        pop.pass_(PASSWORDS[ALICE])
        assert pop.stat()[0] == 1
        pop.quit()

    def test_plaintext_login_refused_before_tls_when_configured(self, start_mailstore):
        mailstore = start_mailstore(plaintext="never")
        pop = poplib.POP3("127.0.0.1", mailstore.ports["pop3"], timeout=30)
        caps = pop.capa()
        assert "USER" not in caps and "SASL" not in caps and "STLS" in caps
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Plaintext authentication disallowed"):
            pop.user(ALICE)
        token = base64.b64encode(f"\0{ALICE}\0{PASSWORDS[ALICE]}".encode())
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            pop._shortcmd("AUTH PLAIN " + token.decode())
        pop.stls(client_tls())
        caps = pop.capa()
        assert "USER" in caps and caps["SASL"] == ["PLAIN"]
        pop.user(ALICE)
        assert pop.pass_(PASSWORDS[ALICE]).startswith(b"+OK")
        pop.quit()

    def test_commands_pipelined_after_stls_are_dropped(self, mailstore):
        raw = Raw(mailstore.ports["pop3"])
        raw.file.write(b"STLS\r\nUSER alice@example.com\r\n")
        raw.file.flush()
        assert raw.file.readline().startswith(b"+OK")
        tls = client_tls().wrap_socket(raw.sock)
        f = tls.makefile("rwb")
        f.write(b"PASS " + PASSWORDS[ALICE].encode() + b"\r\n")
        f.flush()
        assert f.readline().startswith(b"-ERR Send USER first")
        tls.close()


class TestBadInput:
    @pytest.mark.parametrize("line, expect", [
        ("FROB", b"-ERR unknown command"),
        ("RETR", b"-ERR RETR needs 1 argument"),
        ("RETR x", b"-ERR message number must be a number"),
        ("RETR 0", b"-ERR"),
        ("RETR 99", b"-ERR no such message"),
        ("TOP 1", b"-ERR"),
        ("TOP 1 -1", b"-ERR"),
        ("LIST 1 2", b"-ERR too many arguments"),
        ("USER bob@example.com", b"-ERR USER is not valid in the TRANSACTION state"),
        ("STLS", b"-ERR STLS is not valid"),
        ("APOP a b", b"-ERR APOP is not valid"),
        ("", b"-ERR empty command"),
    ])
    def test_errors_keep_the_session_usable(self, mailstore, line, expect):
        deliver(mailstore, 1)
        raw = Raw(mailstore.ports["pop3"])
        assert raw.cmd(f"USER {ALICE}").startswith(b"+OK")
        assert raw.cmd(f"PASS {PASSWORDS[ALICE]}").startswith(b"+OK")
        assert raw.cmd(line).startswith(expect)
        assert raw.cmd("STAT").startswith(b"+OK 1 ")
        raw.close()

    def test_commands_out_of_state(self, mailstore):
        raw = Raw(mailstore.ports["pop3"])
        assert raw.greeting.startswith(b"+OK")
        assert raw.cmd("STAT").startswith(b"-ERR STAT is not valid in the AUTHORIZATION state")
        assert raw.cmd("PASS x").startswith(b"-ERR Send USER first")
        assert raw.cmd("AUTH CRAM-MD5").startswith(b"-ERR Unsupported")
        assert raw.cmd("AUTH").startswith(b"+OK")
        assert raw.multiline() == [b"PLAIN\r\n"]
        assert raw.cmd("QUIT").startswith(b"+OK")
        raw.close()

    def test_over_long_line_is_refused_and_session_continues(self, start_mailstore):
        mailstore = start_mailstore(max_line_length=512)
        raw = Raw(mailstore.ports["pop3"])
        assert raw.cmd("USER " + "a" * 100_000).startswith(b"-ERR Line too long")
        assert raw.cmd(f"USER {ALICE}").startswith(b"+OK")
        assert raw.cmd(f"PASS {PASSWORDS[ALICE]}").startswith(b"+OK")
        raw.close()

    def test_binary_garbage(self, mailstore):
        raw = Raw(mailstore.ports["pop3"])
        assert raw.cmd(b"\xff\xfe\x00\x01").startswith(b"-ERR")
        assert raw.cmd("CAPA").startswith(b"+OK")
        assert b"UIDL\r\n" in raw.multiline()
        raw.close()

    def test_too_many_bad_commands_close_the_connection(self, mailstore):
        raw = Raw(mailstore.ports["pop3"])
        replies = [raw.cmd("FROB") for _ in range(20)]
        assert replies[-1].startswith(b"-ERR Too many bad commands")
        assert raw.file.readline() == b""
        raw.close()


class TestLimits:
    def test_idle_session_is_closed_without_update(self, start_mailstore):
        mailstore = start_mailstore(pop3_idle_timeout_seconds=1)
        deliver(mailstore, 1)
        raw = Raw(mailstore.ports["pop3"])
        raw.cmd(f"USER {ALICE}")
        raw.cmd(f"PASS {PASSWORDS[ALICE]}")
        assert raw.cmd("DELE 1").startswith(b"+OK")
        assert raw.file.readline().startswith(b"-ERR Disconnected for inactivity")
        assert raw.file.readline() == b""
        raw.close()
        assert len(mailstore.inbox(ALICE)[1]) == 1

    def test_connections_per_client_are_limited(self, start_mailstore):
        mailstore = start_mailstore(max_connections_per_client=2)
        first, second = Raw(mailstore.ports["pop3"]), Raw(mailstore.ports["pop3"])
        third = Raw(mailstore.ports["pop3"])
        assert first.greeting.startswith(b"+OK") and second.greeting.startswith(b"+OK")
        assert third.greeting.startswith(b"-ERR [SYS/TEMP]")
        first.cmd("QUIT")
        first.close()
        fourth = eventually(lambda: Raw(mailstore.ports["pop3"]), check=lambda r: r.greeting.startswith(b"+OK"))
        assert fourth.greeting.startswith(b"+OK")
        for c in (second, third, fourth):
            c.close()
