"""Bad input gets BAD or NO and the session stays usable: wrong arguments,
unknown commands, over-long lines, over-size literals (refused before they
are read); and property tests of the command parser."""
from __future__ import annotations

import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from correo_server.mailstore.imap import reader, responses
from correo_server.mailstore.imap.commands import default_registry
from correo_server.mailstore.imap.commands.base import Command
from correo_server.mailstore.imap.reader import BadCommand

parse_command = default_registry().parse
from imaptest_messages import SIMPLE
from imaptest_support import ALICE, RawClient, ServerThread, make_config, make_directory


def status(lines: list[bytes]) -> bytes:
    return lines[-1].split()[1]


WRONG = [
    "NOOP extra", "CAPABILITY x", "LOGOUT now", "SELECT", "SELECT INBOX extra", "SELECT INBOX (BOGUS)",
    "EXAMINE", "CREATE", "DELETE", "RENAME onlyone", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LIST \"\"",
    "LIST (BOGUS) \"\" *", "LSUB \"\"", "STATUS INBOX", "STATUS INBOX ()", "STATUS INBOX (FOO)",
    "APPEND", "APPEND INBOX", "APPEND INBOX (\\Seen) notaliteral", "APPEND INBOX \"bad date\" {1+}\r\nx",
    "FETCH", "FETCH 1", "FETCH x FLAGS", "FETCH 0 FLAGS", "FETCH 1 (FLAGS", "FETCH 1 BOGUS",
    "FETCH 1 BODY[HEADER.FIELDS]", "FETCH 1 BODY[1.BOGUS]", "FETCH 1 BODY[]<1>", "FETCH 1 (FLAGS) (FOO 1)",
    "STORE 1", "STORE 1 FLAGS", "STORE 1 XFLAGS (\\Seen)", "STORE 1 +FLAGS (\\Recentx)",
    "COPY 1", "COPY", "MOVE 1", "UID", "UID FOO 1", "UID FETCH", "UID EXPUNGE", "EXPUNGE 1",
    "SEARCH", "SEARCH FOO", "SEARCH BEFORE notadate", "SEARCH OR SEEN", "SEARCH (SEEN", "SEARCH LARGER x",
    "SEARCH HEADER Subject", "SEARCH CHARSET", "ENABLE", "ID", "ID (\"a\")", "GETQUOTA", "GETQUOTAROOT",
    "SETQUOTA", "IDLE now", "NAMESPACE x", "CHECK 1", "CLOSE 1", "UNSELECT 1",
    "LOGIN", "LOGIN onlyuser", "AUTHENTICATE", "STARTTLS now", "XYZZY", "FETCH 1 FLAGS\x00",
]


def test_every_command_with_wrong_arguments_gets_bad_and_session_lives_on(imap):
    imap.deliver(ALICE, SIMPLE)
    c = RawClient(imap.port)
    c.login()
    c.cmd("SELECT INBOX")
    for text in WRONG:
        lines = c.cmd(text)
        assert status(lines) == b"BAD", (text, lines)
    assert c.cmd("FETCH 1 (UID)")[0] == b"* 1 FETCH (UID 1)\r\n"


MISSING = [
    ("LIST", b"BAD LIST needs a reference and a mailbox name"),
    ('LIST ""', b"BAD LIST needs a reference and a mailbox name"),
    ("SELECT", b"BAD SELECT needs a mailbox name"),
    ("RENAME Old", b"BAD RENAME needs the old and the new mailbox name"),
    ("STATUS INBOX", b"BAD STATUS needs a mailbox name and a list of status items"),
    ("FETCH 1", b"BAD FETCH needs a message set and the data items to fetch"),
    ("UID FETCH", b"BAD UID FETCH needs a UID set and the data items to fetch"),
    ("UID EXPUNGE", b"BAD UID EXPUNGE needs a UID set"),
    ("UID", b"BAD UID needs a command: COPY, EXPUNGE, FETCH, MOVE, REPLACE, SEARCH, SORT, STORE or THREAD"),
    ("SEARCH", b"BAD SEARCH needs search criteria"),
    ("SEARCH FROM", b"BAD Error in IMAP command SEARCH: FROM needs a search string"),
    ("SEARCH OR SEEN", b"BAD Error in IMAP command SEARCH: OR needs two search keys"),
    ("SEARCH BEFORE", b"BAD Error in IMAP command SEARCH: BEFORE needs a date such as 1-Feb-2024"),
    ("SEARCH (SEEN", b"BAD Error in IMAP command SEARCH: Missing ')'"),
    ("SEARCH ALL)", b"BAD Error in IMAP command SEARCH: Unexpected ')'"),
    ("FETCH 1 (FLAGS", b"BAD Error in IMAP command FETCH: Missing ')'"),
    ("FETCH 1 (FLAGS UID", b"BAD Error in IMAP command FETCH: Missing ')'"),
    ("FETCH 1 BODY[HEADER", b"BAD Error in IMAP command FETCH: Missing ']'"),
    ("FETCH 1 FLAGS)", b"BAD Error in IMAP command FETCH: Unexpected ')'"),
    ("FETCH 1 FLAGS UID", b"BAD Error in IMAP command FETCH: Too many arguments "
                          b"(several fetch attributes go in parentheses: (FLAGS UID))"),
    ("FETCH x FLAGS", b"BAD Error in IMAP command FETCH: Invalid message set: x"),
    ("STORE 1 +FLAGS", b"BAD Error in IMAP command STORE: Missing the flags to set, add or remove"),
    ("STORE 1 XFLAGS (\\Seen)", b"BAD Error in IMAP command STORE: Expected FLAGS, +FLAGS or -FLAGS, found 'XFLAGS'"),
    ('SEARCH SUBJECT "lunch', b"BAD Error in IMAP command SEARCH: Missing '\"'"),
    ("NOOP now", b"BAD Error in IMAP command NOOP: Too many arguments"),
    ("COPY 1", b"BAD COPY needs a message set and a mailbox name"),
]


def test_missing_arguments_are_named_in_the_users_terms(imap):
    """Like Dovecot: what is missing or wrong, never the parser's view of
    it ("expected a space"); the reply is tagged and the session goes on."""
    imap.deliver(ALICE, SIMPLE)
    c = RawClient(imap.port)
    c.login()
    c.cmd("SELECT INBOX")
    for text, reply in MISSING:
        lines = c.cmd(text)
        assert lines == [b"t%d " % c.n + reply + b"\r\n"], text
        assert c.cmd("FETCH 1 (UID)")[0] == b"* 1 FETCH (UID 1)\r\n"


CUT_SHORT = [
    b'LIST "" "*"', b"LSUB Work/ %", b"SEARCH FROM bob", b"SEARCH CHARSET UTF-8 OR FROM a NOT TO b",
    b"SEARCH HEADER Subject lunch UID 1:3 LARGER 10 SINCE 1-Feb-2024", b"FETCH 1 (FLAGS UID)",
    b"FETCH 1:* BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100> (CHANGEDSINCE 5)", b"STORE 1 (UNCHANGEDSINCE 5) +FLAGS (\\Seen)",
    b"STATUS INBOX (MESSAGES UNSEEN)", b"RENAME a b", b"LOGIN alice pw", b"COPY 1:3 Trash", b"UID MOVE 1 Trash",
    b'APPEND INBOX (\\Seen) "01-Feb-2024 10:00:00 +0000" {1+}', b'SETQUOTA "" (STORAGE 10)',
    b'LIST (SUBSCRIBED) "" ("a" "b") RETURN (STATUS (MESSAGES))', b"SELECT INBOX (CONDSTORE)", b"ID (\"a\" \"b\")",
    b"AUTHENTICATE PLAIN", b"ENABLE CONDSTORE", b"GETQUOTAROOT INBOX", b"UID EXPUNGE 1:2",
]


@pytest.mark.parametrize("command", CUT_SHORT)
def test_a_command_cut_short_at_any_argument_says_what_is_missing(command):
    """Every command that ends where an argument should follow (with or
    without a trailing space) is answered BAD with a message that says what
    is missing — never the parser's "expected a space"."""
    cuts = [i for i, c in enumerate(command) if c == 0x20]
    assert cuts
    for i in cuts:
        for buf in (command[:i], command[:i + 1]):
            try:
                parse_command(b"a1 " + buf + b"\r\n")
            except BadCommand as exc:
                assert exc.tag == "a1"
                message = exc.message.split(": ", 1)[-1] if exc.message.startswith("Error in") else exc.message
                assert "needs" in message or message.startswith("Missing"), (buf, exc.message)
                assert "expected a space" not in exc.message.lower()
                continue
            # a shorter command that is itself complete (SEARCH FROM bob / UID 1:3 ...)
            assert buf.count(b"(") == buf.count(b")") and buf.count(b'"') % 2 == 0, buf


def test_unknown_command_and_bad_tags(imap):
    c = RawClient(imap.port)
    assert c.cmd("FROBNICATE")[-1].endswith(b"BAD Unknown command FROBNICATE\r\n")
    c.send(b"\r\n")
    assert c.readline() == b"* BAD Error in IMAP command: no tag\r\n"
    c.send(b"+tag NOOP\r\n")
    assert c.readline().startswith(b"* BAD")
    c.send(b"justatag\r\n")
    assert c.readline().startswith(b"justatag BAD")
    c.login()
    assert status(c.cmd("NOOP")) == b"OK"


def test_overlong_line_is_refused_without_buffering_it(imap):
    c = RawClient(imap.port)
    c.login()
    # 8192 is this configuration's limit; send 200 KB in pieces
    c.send(b"long1 SEARCH SUBJECT " + b"x" * 100_000)
    c.send(b"y" * 100_000 + b"\r\n")
    assert c.readline() == b"long1 BAD Command line too long.\r\n"
    assert status(c.cmd("NOOP")) == b"OK"


def test_oversize_synchronizing_literal_is_refused_before_it_is_sent(imap):
    c = RawClient(imap.port)
    c.login()
    c.send(b"big APPEND INBOX {5000000}\r\n")  # the limit is 1 MiB here
    line = c.readline()
    assert line.startswith(b"big NO [TOOBIG]"), line  # no "+": the client never sends the octets
    assert status(c.cmd("NOOP")) == b"OK"
    c.send(b"ok APPEND INBOX {5}\r\n")
    assert c.readline() == b"+ OK\r\n"
    c.send(b"hello\r\n")
    assert c.read_response(b"ok")[-1].startswith(b"ok OK [APPENDUID")


def test_oversize_nonsynchronizing_literal_closes_the_connection(imap):
    c = RawClient(imap.port)
    c.login()
    c.send(b"big APPEND INBOX {5000000+}\r\n" + b"x" * 10_000)
    assert c.readline().startswith(b"big BAD [TOOBIG]")
    assert c.readline().startswith(b"* BYE")
    with pytest.raises((EOFError, ConnectionError)):
        c.readline()
    c = RawClient(imap.port)  # the server is fine
    c.login()


def test_a_command_of_endless_empty_literals_is_cut_off(imap):
    c = RawClient(imap.port)
    c.login()
    c.cmd("SELECT INBOX")
    try:  # 1 MiB for a whole command is this server's limit; it stops reading before the end
        c.send(b"e SEARCH " + b"TEXT {0+}\r\n " * 120_000 + b"ALL\r\n")
    except ConnectionError:
        pass
    assert c.readline().startswith(b"e BAD [TOOBIG]")
    assert c.readline().startswith(b"* BYE")


def test_overlong_continuation_line_is_answered_with_the_commands_tag(imap):
    c = RawClient(imap.port)
    c.login()
    c.send(b"cont SEARCH TEXT {1+}\r\nx " + b"z" * 20_000 + b"\r\n")
    assert c.readline() == b"cont BAD Command line too long.\r\n"
    assert status(c.cmd("NOOP")) == b"OK"


def test_literals_everywhere_a_string_goes(imap):
    c = RawClient(imap.port)
    c.send(b"l1 LOGIN {17}\r\n")
    assert c.readline() == b"+ OK\r\n"
    c.send(b"alice@example.com {9+}\r\nsecret-pw\r\n")
    assert c.read_response(b"l1")[-1].startswith(b"l1 OK")
    assert status(c.cmd(b"CREATE {4+}\r\nx\"y\\")) == b"OK"  # a name a quoted string cannot carry
    lines = c.cmd('LIST "" *')
    assert b'* LIST (\\HasNoChildren) "/" "x\\"y\\\\"\r\n' in lines


def test_empty_append_and_bad_flag_in_append(imap):
    c = RawClient(imap.port)
    c.login()
    assert status(c.cmd(b"APPEND INBOX {0+}\r\n")) == b"NO"
    assert status(c.cmd(b"APPEND INBOX (\\Bogus) {1+}\r\nx")) == b"BAD"
    assert status(c.cmd(b"APPEND INBOX (\\Seen) {1+}\r\nx")) == b"OK"


def test_garbage_bytes_never_kill_the_server(imap):
    sock = socket.create_connection(("127.0.0.1", imap.port), timeout=10)
    sock.recv(1000)
    junk = bytes(range(256)) * 20 + b"\r\n" + b"\xff\xfe\x00\r\n" + b"a" * 50 + b" {3}\r\n"
    sock.sendall(junk)
    time.sleep(0.2)
    sock.close()
    c = RawClient(imap.port)
    c.login()
    assert status(c.cmd("NOOP")) == b"OK"


# -- the parser, by property --------------------------------------------------------------

COMMAND_WORDS = sorted(default_registry().commands) + ["UID FETCH", "UID STORE", "UID SEARCH", "UID COPY", "UID MOVE",
                                           "UID EXPUNGE", "UID BOGUS", "FOO"]
ARG_PIECES = st.sampled_from([
    b"INBOX", b'""', b'"a b"', b"(", b")", b"*", b"%", b"1", b"1:*", b"2,4:5", b"0", b"{3}\r\nabc", b"{2+}\r\nxy",
    b"FLAGS", b"+FLAGS.SILENT", b"(\\Seen)", b"\\Deleted", b"BODY[]", b"BODY.PEEK[HEADER.FIELDS (FROM)]<0.10>",
    b"BODY[1.2.MIME]", b"ENVELOPE", b"ALL", b"OR", b"NOT", b"SEEN", b"FROM", b"CHARSET", b"UTF-8",
    b"1-Jan-2024", b'"01-Jan-2024 10:00:00 +0000"', b"NIL", b"RETURN", b"(SPECIAL-USE)", b"(CHANGEDSINCE 1)",
    b"(UNCHANGEDSINCE 5)", b"(MESSAGES UNSEEN)", b"\xc3\xa9", b"\x00", b"\\", b'"', b"{", b"}", b"[", b"]",
    b"<", b">", b".", b"HEADER", b"TEXT", b"MODSEQ", b"UID", b"{99}\r\n",
])


@st.composite
def commands(draw) -> bytes:
    tag = draw(st.sampled_from([b"a1", b"tag", b"X.9", b"t-1"]))
    word = draw(st.sampled_from(COMMAND_WORDS)).encode()
    pieces = draw(st.lists(ARG_PIECES, max_size=8))
    seps = draw(st.lists(st.sampled_from([b" ", b"", b"  "]), min_size=len(pieces), max_size=len(pieces)))
    return tag + b" " + word + b"".join(s + p for s, p in zip(seps, pieces)) + b"\r\n"


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands())
def test_parser_never_crashes_and_always_names_the_tag(buf):
    try:
        cmd = parse_command(buf)
    except BadCommand as exc:
        assert exc.tag == buf.split(b" ")[0].decode()
        assert exc.message and all(" " <= ch <= "~" for ch in exc.message)  # one printable line
        assert "expected a space" not in exc.message.lower()
        return
    assert isinstance(cmd, Command) and cmd.tag == buf.split(b" ")[0].decode()


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
def test_parser_survives_arbitrary_bytes(buf):
    try:
        parse_command(buf + b"\r\n")
    except BadCommand as exc:
        assert exc.tag is None or buf.startswith(exc.tag.encode())
        assert exc.message and all(" " <= ch <= "~" for ch in exc.message)
        assert responses.tagged(exc.tag or "*", "BAD", exc.message).endswith(b"\r\n")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_modified_utf7_round_trips(text):
    from correo_server.mailstore.imap import utf7
    assert utf7.decode(utf7.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_strings_are_always_well_formed(value):
    out = responses.string(value)
    if out.startswith(b'"'):
        assert b"\r" not in out and b"\n" not in out and all(b < 0x80 for b in out)
        reparsed = reader.Reader(out).quoted()
    else:
        reparsed = reader.Reader(out).literal()
    assert reparsed == value


def test_a_session_survives_random_commands(tmp_path):
    """Many random commands against a live session: every one gets its
    tagged reply and the session still works afterwards."""
    import random
    cfg = make_config(tmp_path)
    server = ServerThread(cfg, make_directory(cfg))
    try:
        server.deliver(ALICE, SIMPLE)
        c = RawClient(server.port)
        c.login()
        c.cmd("SELECT INBOX")
        rng = random.Random(7)
        words = ["FETCH", "STORE", "SEARCH", "UID FETCH", "LIST", "STATUS", "COPY", "SELECT", "EXAMINE",
                 "NOOP", "CHECK", "ENABLE", "ID", "GETQUOTAROOT"]
        args = ["1", "1:*", "*", "INBOX", '""', "(FLAGS)", "BODY[]", "+FLAGS", "(\\Seen)", "ALL", "OR",
                "(", ")", "Trash", "(MESSAGES)", "CONDSTORE", "NIL", "%", '"x"']
        for i in range(300):
            text = rng.choice(words) + "".join(" " + rng.choice(args) for _ in range(rng.randrange(0, 5)))
            lines = c.cmd(text)
            assert lines[-1].split()[1] in (b"OK", b"NO", b"BAD"), (text, lines)
        assert status(c.cmd("SELECT INBOX")) == b"OK"
        assert status(c.cmd("FETCH 1 UID")) == b"OK"
    finally:
        server.stop()
