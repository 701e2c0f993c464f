"""Getting in: greeting and capabilities, LOGIN and AUTHENTICATE, TLS (STARTTLS
and implicit), plaintext refusal, failed-login limits, connection limits,
autologout, metrics."""
from __future__ import annotations

import base64
import imaplib
import socket
import ssl
import time
from dataclasses import replace

import pytest

from imaptest_support import ALICE, CAROL, PASSWORD, RawClient, ServerThread, client_tls, make_config, \
    make_directory


def test_greeting_and_capabilities_before_and_after_login(imap):
    c = RawClient(imap.port)
    assert c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    caps = c.cmd("CAPABILITY")[0].split()[2:]
    # before login, only what a client needs to decide how to log in (as Dovecot)
    assert set(caps) == {b"IMAP4rev1", b"LITERAL+", b"SASL-IR", b"ID", b"AUTH=PLAIN", b"AUTH=LOGIN"}
    assert c.greeting.split(b"]")[0].split()[3:] == caps  # STARTTLS absent: this server has no key pair
    line = c.cmd(f"LOGIN {ALICE} {PASSWORD}")[-1]
    assert b"OK [CAPABILITY IMAP4rev1" in line
    assert b"AUTH=" not in line and b"SASL-IR" not in line
    for cap in (b"UIDPLUS", b"MOVE", b"NAMESPACE", b"SPECIAL-USE", b"QUOTA", b"UNSELECT", b"CHILDREN",
                b"CONDSTORE", b"ENABLE", b"ID", b"IDLE", b"LITERAL+"):
        assert cap in line
    assert c.cmd("ID NIL")[0] == b'* ID ("name" "correo" "version" "0.1.0" "vendor" "correo")\r\n'
    assert c.cmd('ID ("name" "test" "version" "1")')[-1].split()[1] == b"OK"
    assert c.cmd('ID ("event" "x" "level" NIL)')[-1].split()[1] == b"OK"  # any field name is just data
    assert c.cmd("NAMESPACE")[0] == b'* NAMESPACE (("" "/")) NIL NIL\r\n'
    lines = c.cmd("LOGOUT")
    assert lines[0] == b"* BYE Logging out\r\n" and lines[1].split()[1] == b"OK"
    c.close()


def test_login_by_alias_and_by_alias_domain(imap):
    for user in ("postmaster@example.com", "ALICE@example.net"):
        client = imaplib.IMAP4("127.0.0.1", imap.port)
        assert client.login(user, PASSWORD)[0] == "OK"
        client.logout()


def test_wrong_password_unknown_user_and_suspended_mailbox(imap):
    c = RawClient(imap.port)
    assert b"NO [AUTHENTICATIONFAILED]" in c.cmd(f"LOGIN {ALICE} wrong")[-1]
    assert b"NO [AUTHENTICATIONFAILED]" in c.cmd(f"LOGIN nobody@example.com {PASSWORD}")[-1]
    c.close()
    c = RawClient(imap.port)
    assert b"NO [CONTACTADMIN]" in c.cmd(f"LOGIN {CAROL} {PASSWORD}")[-1]
    c.close()
    assert imap.ctx.metrics.value("mailstore_logins_total", protocol="imap", result="failed") == 3


def test_too_many_failures_end_the_session_and_cost_growing_delays(imap):
    c = RawClient(imap.port)
    started = time.monotonic()
    c.cmd(f"LOGIN {ALICE} bad1")
    c.cmd(f"LOGIN {ALICE} bad2")
    c.n += 1
    c.send(b"t9 LOGIN alice@example.com bad3\r\n")
    assert c.readline() == b"* BYE Too many invalid authentication attempts.\r\n"
    assert time.monotonic() - started >= 0.01 + 0.02 + 0.04 - 0.005  # 0.01 s doubled per failure
    with pytest.raises((EOFError, ConnectionError)):
        c.readline()
    assert imap.ctx.throttle.failures("127.0.0.1") == 3
    c = RawClient(imap.port)
    c.login()  # a success clears the delay
    assert imap.ctx.throttle.failures("127.0.0.1") == 0


def test_authenticate_plain_with_and_without_initial_response(imap):
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    c = RawClient(imap.port)
    assert b"OK [CAPABILITY" in c.cmd(f"AUTHENTICATE PLAIN {token}")[-1]
    c.close()
    c = RawClient(imap.port)
    c.send(b"a AUTHENTICATE PLAIN\r\n")
    assert c.readline() == b"+ \r\n"
    c.send(token.encode() + b"\r\n")
    assert c.read_response(b"a")[-1].startswith(b"a OK")
    c.close()
    c = RawClient(imap.port)
    c.send(b"a AUTHENTICATE PLAIN\r\n")
    c.readline()
    c.send(b"*\r\n")
    assert c.read_response(b"a")[-1].startswith(b"a BAD")
    c.send(b"b AUTHENTICATE PLAIN\r\n")
    c.readline()
    c.send(b"not base64!\r\n")
    assert c.read_response(b"b")[-1].startswith(b"b BAD")
    assert c.cmd("AUTHENTICATE CRAM-MD5")[-1].split()[1] == b"NO"
    other = base64.b64encode(f"bob@example.com\0{ALICE}\0{PASSWORD}".encode()).decode()
    assert b"NO [AUTHENTICATIONFAILED]" in c.cmd(f"AUTHENTICATE PLAIN {other}")[-1]  # acting as someone else
    c.close()
    client = imaplib.IMAP4("127.0.0.1", imap.port)  # AUTH=LOGIN, as old clients use it
    answers = iter([ALICE, PASSWORD])
    assert client.authenticate("LOGIN", lambda _challenge: next(answers))[0] == "OK"
    client.logout()


def test_commands_in_the_wrong_state(imap):
    c = RawClient(imap.port)
    assert c.cmd("SELECT INBOX")[-1].split()[1] == b"BAD"
    assert c.cmd("FETCH 1 FLAGS")[-1].split()[1] == b"BAD"
    c.login()
    assert c.cmd("FETCH 1 FLAGS")[-1].split()[1] == b"BAD"
    assert c.cmd(f"LOGIN {ALICE} {PASSWORD}")[-1].split()[1] == b"BAD"
    assert c.cmd("SELECT INBOX")[-1].split()[1] == b"OK"
    assert c.cmd("CHECK")[-1].split()[1] == b"OK"
    c.close()


# -- TLS ---------------------------------------------------------------------------------

def test_plaintext_login_refused_until_starttls(imap_tls):
    c = RawClient(imap_tls.port)
    caps = c.cmd("CAPABILITY")[0]
    assert b"STARTTLS" in caps and b"LOGINDISABLED" in caps and b"AUTH=PLAIN" not in caps
    assert b"NO [PRIVACYREQUIRED]" in c.cmd(f"LOGIN {ALICE} {PASSWORD}")[-1]
    assert b"NO [PRIVACYREQUIRED]" in c.cmd("AUTHENTICATE PLAIN AGFsaWNlAHg=")[-1]
    c.close()
    client = imaplib.IMAP4("127.0.0.1", imap_tls.port)
    assert client.starttls(client_tls())[0] == "OK"
    assert "STARTTLS" not in client.capabilities and "AUTH=PLAIN" in client.capabilities
    assert client.login(ALICE, PASSWORD)[0] == "OK"
    assert client.select("INBOX")[0] == "OK"
    client.logout()


def test_implicit_tls_port(imap_tls):
    client = imaplib.IMAP4_SSL("127.0.0.1", imap_tls.tls_port, ssl_context=client_tls())
    assert "STARTTLS" not in client.capabilities
    assert client.login(ALICE, PASSWORD)[0] == "OK"
    client.logout()


def test_data_pipelined_after_starttls_is_discarded(imap_tls):
    sock = socket.create_connection(("127.0.0.1", imap_tls.port))
    sock.recv(4096)
    sock.sendall(b"a STARTTLS\r\nb CAPABILITY\r\n")  # "b" must not run, in clear or in TLS
    reply = b""
    while b"\r\n" not in reply:
        reply += sock.recv(4096)
    assert reply.startswith(b"a OK")
    tls = client_tls().wrap_socket(sock, server_hostname="mail.example.com")
    tls.sendall(b"c NOOP\r\n")
    data = b""
    while b"c OK" not in data:
        data += tls.recv(4096)
    assert b"b OK" not in data and b"CAPABILITY" not in data
    tls.close()


# -- limits -------------------------------------------------------------------------------

def test_connections_per_client_are_limited(tmp_path):
    cfg = make_config(tmp_path, max_connections_per_client=2)
    server = ServerThread(cfg, make_directory(cfg))
    try:
        a, b = RawClient(server.port), RawClient(server.port)
        third = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        greeting = third.recv(4096)
        assert greeting.startswith(b"* BYE Too many connections from your address")
        a.close()
        deadline = time.monotonic() + 5
        while server.ctx.imap_gate.total > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        c = RawClient(server.port)
        assert c.greeting.startswith(b"* OK")
        b.close()
        c.close()
    finally:
        server.stop()


def test_idle_connection_is_logged_out(tmp_path):
    cfg = make_config(tmp_path, imap_idle_timeout_seconds=1)
    server = ServerThread(cfg, make_directory(cfg))
    try:
        c = RawClient(server.port)
        c.login()
        assert c.readline() == b"* BYE Disconnected for inactivity.\r\n"
        assert server.ctx.metrics.value("mailstore_sessions_total", protocol="imap") == 1
    finally:
        server.stop()


def test_sessions_are_counted(imap):
    c = RawClient(imap.port)
    c.login()
    assert imap.ctx.metrics.value("mailstore_sessions_active", protocol="imap") == 1
    assert imap.ctx.metrics.value("mailstore_logins_total", protocol="imap", result="ok") == 1
    c.cmd("LOGOUT")
    deadline = time.monotonic() + 5
    while imap.ctx.metrics.value("mailstore_sessions_active", protocol="imap") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert imap.ctx.metrics.value("mailstore_sessions_active", protocol="imap") == 0
    assert "correo_mailstore_logins_total" in imap.ctx.metrics.render()


# -- the verified-login cache ------------------------------------------------------------

def _count_hashing(monkeypatch) -> list[str]:
    from correo_server import passwords
    calls: list[str] = []
    real = passwords.verify

    def counting(stored: str, password: str) -> bool:
        calls.append(password)
        return real(stored, password)
    monkeypatch.setattr(passwords, "verify", counting)
    return calls


def _login(imap, user: str, password: str) -> bytes:
    c = RawClient(imap.port)
    try:
        return c.cmd(f'LOGIN {user} "{password}"')[-1]
    finally:
        c.close()


def _set_entry(directory, address: str, **changes) -> None:
    """What a directory reload does: the same entries, one changed."""
    d = directory.value
    directory.value = type(d)(tuple(replace(e, **changes) if e.address == address else e for e in d.mailboxes),
                              d.config)


def test_a_repeated_login_is_not_hashed_again_until_the_password_changes(imap, monkeypatch):
    """Dovecot's auth_cache: the second login with the same password skips
    argon2; a new hash in the directory (password changed) invalidates it
    at once — the old password fails, the new one is hashed."""
    from correo_server.passwords import hash_password, stable_salt
    hashed = _count_hashing(monkeypatch)
    assert b"OK" in _login(imap, ALICE, PASSWORD)
    assert b"OK" in _login(imap, "postmaster@example.com", PASSWORD)  # an alias: the same mailbox, cached
    assert hashed == [PASSWORD]
    assert b"AUTHENTICATIONFAILED" in _login(imap, ALICE, "not-it")  # another password: hashed, never cached
    assert b"AUTHENTICATIONFAILED" in _login(imap, ALICE, "not-it")
    assert hashed == [PASSWORD, "not-it", "not-it"]
    _set_entry(imap.directory, ALICE, password_hash=hash_password("new-pw", stable_salt("n")))
    assert b"AUTHENTICATIONFAILED" in _login(imap, ALICE, PASSWORD)
    assert b"OK" in _login(imap, ALICE, "new-pw")
    assert b"OK" in _login(imap, ALICE, "new-pw")
    assert hashed[3:] == [PASSWORD, "new-pw"]


def test_a_suspension_takes_effect_at_the_next_login_even_when_cached(imap, monkeypatch):
    hashed = _count_hashing(monkeypatch)
    assert b"OK" in _login(imap, ALICE, PASSWORD)
    _set_entry(imap.directory, ALICE, suspended=True)
    assert b"CONTACTADMIN" in _login(imap, ALICE, PASSWORD)
    _set_entry(imap.directory, ALICE, suspended=False)
    assert b"OK" in _login(imap, ALICE, PASSWORD)
    assert hashed == [PASSWORD, PASSWORD]  # the suspension dropped the entry: hashed again


def test_login_cache_expires_is_bounded_and_can_be_turned_off():
    from correo_server.logincache import LoginCache
    now = [0.0]
    cache = LoginCache(ttl_seconds=60, max_entries=2, clock=lambda: now[0])
    cache.remember("a@x", "{H}1", "pw")
    assert cache.verified("a@x", "{H}1", "pw") and not cache.verified("a@x", "{H}1", "PW")
    assert not cache.verified("a@x", "{H}2", "pw") and len(cache) == 0  # another hash: dropped
    cache.remember("a@x", "{H}1", "pw")
    now[0] = 59.9
    assert cache.verified("a@x", "{H}1", "pw")
    now[0] = 60.0
    assert not cache.verified("a@x", "{H}1", "pw")
    for user in ("a@x", "b@x", "c@x"):
        cache.remember(user, "{H}", "pw")
    assert len(cache) == 2 and not cache.verified("a@x", "{H}", "pw")  # least recently used went first
    off = LoginCache(ttl_seconds=0)
    off.remember("a@x", "{H}", "pw")
    assert not off.verified("a@x", "{H}", "pw") and len(off) == 0
