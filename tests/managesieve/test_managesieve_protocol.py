"""ManageSieve (RFC 5804) on the wire: what a client sees for every command."""
from __future__ import annotations

import time

import pytest

from correo_server.mailstore.managesieve.parser import Command, ParseError, literal_length, parse

from managesieve_support import ALICE, CAROL, PASSWORD, Raw, literal, plain

GOOD = b'require "fileinto";\r\nif header :contains "subject" "sieve" { fileinto "Lists"; }\r\n'
BAD = b'require "fileinto";\r\nif header :contains "subject" "x" {\r\n  filein "Lists";\r\n}\r\n'


def caps(lines: list[bytes]) -> dict[str, str | None]:
    out = {}
    for line in lines[:-1]:
        parts = line.split(b'" "', 1)
        name = parts[0].strip(b'"').decode().upper()
        out[name] = parts[1].rstrip(b'"').decode() if len(parts) > 1 else None
    return out


# -- parsing (pure) --------------------------------------------------------------------------

def test_parser_reads_quoted_strings_literals_and_numbers():
    assert parse(b'HaveSpace "my \\"script\\"" 435\r\n') == Command("HAVESPACE", (b'my "script"', 435))
    assert parse(b'PUTSCRIPT "a" {5+}\r\nhello\r\n') == Command("PUTSCRIPT", (b"a", b"hello"))
    assert parse(b'PUTSCRIPT {1}\r\na {3}\r\nb\r\n\r\n') == Command("PUTSCRIPT", (b"a", b"b\r\n"))
    assert literal_length(b'PUTSCRIPT "a" {12+}\r\n') == 12 and literal_length(b'NOOP "{1}"\r\n') is None


@pytest.mark.parametrize("line,words", [
    (b"FROB\r\n", "Unknown command"), (b'GETSCRIPT\r\n', "needs 1 argument"),
    (b'GETSCRIPT "a" "b"\r\n', "Too many"), (b'HAVESPACE "a" 012\r\n', "leading zeros"),
    (b'HAVESPACE "a" 99999999999\r\n', "too large"), (b'GETSCRIPT "a\\x"\r\n', "may be escaped"),
    (b'GETSCRIPT "abc\r\n', "Unterminated"), (b'GETSCRIPT "' + b"x" * 1100 + b'"\r\n', "send a literal"),
    (b'GETSCRIPT  "a"\r\n', "Expected a string"), (b'NOOP "a"x\r\n', "Unexpected text"),
])
def test_parser_errors(line, words):
    with pytest.raises(ParseError, match=words):
        parse(line)


# -- greeting, capabilities, logins ------------------------------------------------------------

def test_greeting_lists_the_capabilities_a_client_needs(client):
    c = caps(client.greeting)
    assert client.greeting[-1].startswith(b"OK")
    assert c["IMPLEMENTATION"].startswith("correo") and c["VERSION"] == "1.0"
    assert c["SASL"] == "PLAIN" and "STARTTLS" in c and "UNAUTHENTICATE" in c
    assert {"fileinto", "vacation", "include", "duplicate", "variables"} <= set(c["SIEVE"].split())
    assert c["MAXREDIRECTS"] == "4" and "OWNER" not in c


def test_login_with_initial_response_and_with_a_continuation(client):
    assert client.login()[-1] == b'OK "Logged in."'
    assert caps(client.command("CAPABILITY"))["OWNER"] == ALICE


def test_login_with_a_separate_sasl_response_and_cancelling(client):
    client.send('AUTHENTICATE "PLAIN"\r\n')
    assert client.line() == b'""'
    assert client.command("*")[-1].startswith(b"NO")
    client.send('AUTHENTICATE "PLAIN"\r\n')
    assert client.line() == b'""'
    assert client.command(b"{%d+}\r\n%s" % (len(plain()), plain().encode()))[-1].startswith(b"OK")


def test_login_by_alias_owns_the_mailbox(client):
    assert client.login("postmaster@example.com")[-1].startswith(b"OK")
    assert caps(client.command("CAPABILITY"))["OWNER"] == ALICE


def test_failed_logins_cost_a_growing_delay_then_bye(server):
    client = Raw(server.port)
    started = time.monotonic()
    assert client.login(password="wrong")[-1] == b'NO "Authentication failed."'
    assert client.login("nobody@example.com", "x")[-1] == b'NO "Authentication failed."'
    assert client.login(password="wrong")[-1].startswith(b"BYE")
    assert time.monotonic() - started >= 0.2 + 0.4 + 0.8 - 0.05  # the throttle's doubling delays
    with pytest.raises(ConnectionError):
        client.line()
    assert server.metrics.render().count('protocol="managesieve",result="failed"') >= 1


def test_suspended_mailbox_is_told_so(client):
    assert client.login(CAROL)[-1] == b'NO "This mailbox is suspended; ask your administrator."'


def test_commands_before_login_are_refused(client):
    assert client.command('LISTSCRIPTS')[-1] == b'NO "Authenticate first."'
    assert client.command('PUTSCRIPT "a" {1+}\r\nx')[-1] == b'NO "Authenticate first."'


def test_tls_is_required_away_from_loopback(tls_only):
    client = Raw(tls_only.port)
    c = caps(client.greeting)
    assert c["SASL"] == "" and "STARTTLS" in c  # RFC 5804 1.7: empty SASL only with STARTTLS
    assert b"ENCRYPT-NEEDED" in client.login()[-1]
    after = caps(client.starttls())
    assert after["SASL"] == "PLAIN" and "STARTTLS" not in after
    assert client.login()[-1].startswith(b"OK")
    assert client.command("STARTTLS")[-1].startswith(b"NO")
    client.close()


# -- scripts -------------------------------------------------------------------------------------

def test_putscript_stores_a_valid_script_atomically(server, alice):
    assert alice.command(b'PUTSCRIPT "lists" ' + literal(GOOD))[-1] == b'OK "Putscript completed."'
    files = sorted(p.name for p in (server.scripts_dir() / "scripts").iterdir())
    assert files == ["lists.sieve"]
    assert (server.scripts_dir() / "scripts" / "lists.sieve").read_bytes() == GOOD


def test_putscript_refuses_an_invalid_script_with_line_and_column(server, alice):
    reply = alice.command(b'PUTSCRIPT "lists" ' + literal(BAD))[-1]
    assert reply.startswith(b"NO") and b"line 3, column 3: unknown command 'filein'" in reply
    assert b"did you mean 'fileinto'" in reply
    assert not (server.scripts_dir() / "scripts" / "lists.sieve").exists()
    # an invalid upload never replaces the valid script of the same name
    alice.command(b'PUTSCRIPT "lists" ' + literal(GOOD))
    assert alice.command(b'PUTSCRIPT "lists" ' + literal(BAD))[-1].startswith(b"NO")
    assert alice.command('GETSCRIPT "lists"')[0] == b"{%d}\r\n" % len(GOOD) + GOOD


def test_putscript_names_an_unsupported_extension(alice):
    reply = alice.command(b'PUTSCRIPT "n" ' + literal(b'require "enotify";\r\n'))[-1]
    assert b"'enotify'" in reply and b"not supported" in reply


def test_checkscript_checks_without_storing(server, alice):
    assert alice.command(b"CHECKSCRIPT " + literal(GOOD))[-1] == b'OK "Script is valid."'
    assert b"line 3, column 3" in alice.command(b"CHECKSCRIPT " + literal(BAD))[-1]
    assert not (server.scripts_dir() / "scripts").exists()


def test_listscripts_setactive_getscript_deletescript_renamescript(server, alice):
    for name in ("one", "two"):
        assert alice.command(f'PUTSCRIPT "{name}" '.encode() + literal(GOOD))[-1].startswith(b"OK")
    assert alice.command("LISTSCRIPTS") == [b'"one"', b'"two"', b'OK "Listscripts completed."']
    assert alice.command('SETACTIVE "two"')[-1].startswith(b"OK")
    assert alice.command("LISTSCRIPTS")[:2] == [b'"one"', b'"two" ACTIVE']
    assert (server.scripts_dir() / "active").read_text() == "two\n"
    assert alice.command('DELETESCRIPT "two"')[-1].startswith(b"NO (ACTIVE)")
    assert alice.command('RENAMESCRIPT "two" "one"')[-1].startswith(b"NO (ALREADYEXISTS)")
    assert alice.command('RENAMESCRIPT "two" "three"')[-1].startswith(b"OK")
    assert alice.command("LISTSCRIPTS")[:2] == [b'"one"', b'"three" ACTIVE']  # still active
    assert alice.command('GETSCRIPT "two"')[-1].startswith(b"NO (NONEXISTENT)")
    assert alice.command('SETACTIVE "nope"')[-1].startswith(b"NO (NONEXISTENT)")
    assert alice.command('SETACTIVE ""')[-1].startswith(b"OK")
    assert alice.command('SETACTIVE ""')[-1].startswith(b"OK")  # not an error when none is active
    assert alice.command('DELETESCRIPT "three"')[-1].startswith(b"OK")
    assert alice.command("LISTSCRIPTS") == [b'"one"', b'OK "Listscripts completed."']


def test_script_names_with_any_unicode_but_no_control_characters(server, alice):
    assert alice.command('PUTSCRIPT "Urlaub – Sommer" '.encode() + literal(GOOD))[-1].startswith(b"OK")
    assert alice.command('PUTSCRIPT "../../etc" '.encode() + literal(GOOD))[-1].startswith(b"NO")
    assert alice.command(b'PUTSCRIPT {3+}\r\na\tb ' + literal(GOOD))[-1].startswith(b"NO")
    assert alice.command('PUTSCRIPT "" '.encode() + literal(GOOD))[-1].startswith(b"NO")
    assert alice.command("LISTSCRIPTS")[0] == '"Urlaub – Sommer"'.encode()


def test_quota_on_size_and_count(server, alice):
    assert alice.command('HAVESPACE "big" 9999999')[-1].startswith(b"NO (QUOTA/MAXSIZE)")
    assert alice.command('HAVESPACE "small" 435')[-1].startswith(b"OK")
    big = b"#" * (300 * 1024) + b"\r\nkeep;\r\n"
    assert alice.command(b'PUTSCRIPT "big" ' + literal(big))[-1].startswith(b"NO (QUOTA/MAXSIZE)")
    assert alice.command("NOOP")[-1].startswith(b"OK")  # the connection is still in step
    assert alice.command(b'PUTSCRIPT "empty" ' + literal(b""))[-1].startswith(b"NO")


def test_noop_echoes_its_tag_and_unauthenticate_logs_out(alice):
    assert alice.command('NOOP "STARTTLS-SYNC-42"')[-1] == b'OK (TAG "STARTTLS-SYNC-42") "Done"'
    assert alice.command("UNAUTHENTICATE")[-1].startswith(b"OK")
    assert alice.command("LISTSCRIPTS")[-1] == b'NO "Authenticate first."'
    assert alice.command("UNAUTHENTICATE")[-1].startswith(b"NO")
    assert alice.login()[-1].startswith(b"OK")


def test_pipelined_commands_are_answered_in_order(alice):
    alice.send(b'PUTSCRIPT "p" ' + literal(GOOD) + b'\r\nSETACTIVE "p"\r\nLISTSCRIPTS\r\n')
    assert alice.response()[-1].startswith(b"OK")
    assert alice.response()[-1].startswith(b"OK")
    assert alice.response()[0] == b'"p" ACTIVE'


def test_logout_closes(client):
    assert client.command("LOGOUT")[-1].startswith(b"OK")
    with pytest.raises(ConnectionError):
        client.line()


def test_garbage_and_endless_errors_end_in_bye(client):
    for _ in range(19):
        assert client.command("FROB")[-1].startswith(b"NO")
    assert client.command("FROB")[-1].startswith(b"BYE")


def test_a_huge_literal_closes_the_connection(client):
    client.send(b'PUTSCRIPT "x" {999999999+}\r\n')
    assert client.response()[-1].startswith(b"BYE")


def test_a_user_sees_only_their_own_scripts(server, alice):
    alice.command(b'PUTSCRIPT "mine" ' + literal(GOOD))
    assert (server.data_dir / ALICE / "correo-sieve" / "scripts" / "mine.sieve").exists()
    other = Raw(server.port)
    assert other.login("postmaster@example.com", PASSWORD)[-1].startswith(b"OK")  # alice's alias: same mailbox
    assert other.command("LISTSCRIPTS")[0] == b'"mine"'
    other.close()


def test_the_parser_only_ever_refuses_with_a_parse_error():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    words = st.sampled_from([b"PUTSCRIPT", b"GETSCRIPT", b"HAVESPACE", b"NOOP", b"AUTHENTICATE", b" ", b'"',
                             b"\\", b"{5+}\r\n", b"{0}\r\n", b"12", b"0", b"\r\n", b"x", b"\xff"])

    @settings(max_examples=300, deadline=None)
    @given(st.lists(words, max_size=12))
    def check(parts):
        try:
            parse(b"".join(parts))
        except ParseError:
            pass

    check()
