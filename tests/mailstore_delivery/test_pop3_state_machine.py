"""The POP3 state machine without sockets: any sequence of lines gets one
well-formed reply each, and the session stays usable (property-based)."""
from __future__ import annotations

import base64

from hypothesis import given, settings, strategies as st

from correo_server.mailstore.pop3 import commands
from correo_server.mailstore.pop3.maildrop import Maildrop, NoSuchMessage
from correo_server.mailstore.pop3.states import (Authorization, LoginOutcome, MaildropLocked, Pop3Session,
                                                 Then, Transaction, Update)

MESSAGES = {1: b"Subject: a\r\n\r\none\r\n", 2: b"Subject: b\r\n\r\n.two\r\n", 5: b"Subject: c\r\n\r\nthree\r\n"}


class MemoryBackend:
    """Everything in memory: one user, three messages."""

    def __init__(self, *, tls: bool = False, plaintext: bool = True, locked: bool = False) -> None:
        self.tls, self.plaintext, self.locked = tls, plaintext, locked
        self.messages = dict(MESSAGES)
        self.updates: list[tuple[list[int], list[int]]] = []

    def tls_offered(self): return not self.tls
    def tls_active(self): return self.tls
    def plaintext_allowed(self): return self.plaintext or self.tls

    async def login(self, username, password):
        if (username, password) == ("u@example.com", "pw"):
            return LoginOutcome("u@example.com")
        return LoginOutcome(None, "invalid")

    async def open_maildrop(self, mailbox):
        if self.locked:
            raise MaildropLocked(mailbox)
        return Maildrop(42, [(uid, len(data)) for uid, data in self.messages.items()])

    async def read(self, mailbox, uid):
        if uid not in self.messages:
            raise NoSuchMessage("gone")
        return self.messages[uid]

    async def update(self, mailbox, retrieved, deleted):
        self.updates.append((retrieved, deleted))
        for uid in deleted:
            self.messages.pop(uid, None)

    def release(self, mailbox): pass
    def retrieved(self, size): pass


async def run(session: Pop3Session, line: bytes):
    if session.sasl_pending:
        return await session.sasl_line(line.decode("utf-8", "replace"))
    try:
        parsed = commands.parse(line)
    except commands.CommandError as exc:
        parsed = exc
    return await session.line(parsed)


async def logged_in() -> Pop3Session:
    session = Pop3Session(MemoryBackend())
    await run(session, b"USER u@example.com")
    reply = await run(session, b"PASS pw")
    assert reply.ok and isinstance(session.state, Transaction)
    return session


verbs = st.sampled_from(["USER", "PASS", "AUTH", "STLS", "CAPA", "QUIT", "STAT", "LIST", "RETR", "DELE",
                         "NOOP", "RSET", "TOP", "UIDL", "APOP", "XYZ", "list", "Retr"])
args = st.lists(st.one_of(st.integers(-2, 8).map(str), st.text(max_size=6), st.just("PLAIN")), max_size=3)
lines = st.tuples(verbs, args).map(lambda va: " ".join([va[0], *va[1]]).encode("utf-8"))
noise = st.binary(max_size=30).filter(lambda b: b"\n" not in b)


@given(st.lists(st.one_of(lines, noise), max_size=25))
@settings(max_examples=150, deadline=None)
async def test_every_line_gets_one_well_formed_reply(sequence):
    session = await logged_in()
    for line in sequence:
        reply = await run(session, line)
        status = reply.status_line()
        assert status.startswith((b"+OK", b"-ERR")) or reply.then is Then.SASL
        assert status.endswith(b"\r\n") and status.count(b"\r\n") == 1
        if reply.then is Then.CLOSE:
            assert isinstance(session.state, Update) or not reply.ok
            return
        if reply.then is Then.SASL:
            await run(session, b"*")
    # still usable: a valid command in the current state answers +OK
    probe = b"STAT" if isinstance(session.state, Transaction) else b"CAPA"
    assert (await run(session, probe)).ok


async def test_update_expunges_only_on_quit_and_marks_retrieved():
    session = await logged_in()
    backend = session.backend
    assert (await run(session, b"RETR 2")).body == MESSAGES[2]
    assert (await run(session, b"DELE 3")).ok
    reply = await run(session, b"QUIT")
    assert reply.ok and reply.then is Then.CLOSE
    assert backend.updates == [([2], [5])]
    assert set(backend.messages) == {1, 2}


async def test_sasl_plain_continuation_and_locked_maildrop():
    session = Pop3Session(MemoryBackend(locked=True))
    assert (await run(session, b"AUTH PLAIN")).then is Then.SASL
    token = base64.b64encode(b"\0u@example.com\0pw")
    reply = await run(session, token)
    assert not reply.ok and reply.text.startswith("[IN-USE]")
    assert isinstance(session.state, Authorization)


async def test_plaintext_refused_without_tls():
    session = Pop3Session(MemoryBackend(plaintext=False))
    assert (await run(session, b"USER u@example.com")).text.startswith("[AUTH] Plaintext")
    capa = await run(session, b"CAPA")
    assert "USER" not in capa.lines and "STLS" in capa.lines
    stls = await run(session, b"STLS")
    assert stls.ok and stls.then is Then.STARTTLS
