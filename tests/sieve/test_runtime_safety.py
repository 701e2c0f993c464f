"""A broken or hostile script never loses mail: limits and run-time errors end in the implicit keep."""
from __future__ import annotations

import itertools

import pytest

from correo_server.sieve import FileInto, Keep, Limits, Redirect, compile_script
from correo_server.sieve.comparators import COMPARATORS, glob

from .conftest import DictIncludes, mail, sieve

MSG = mail("From: a@example.org\nTo: b@example.com\nSubject: hello\n\nbody\n")


def failed(result, kind: str | None = None, words: str = "") -> bool:
    return (result.error is not None and result.actions == (Keep(implicit=True),)
            and (kind is None or result.error.kind == kind) and words in str(result.error))


def test_a_runtime_error_keeps_the_message_and_says_where():
    result = sieve('require ["fileinto", "reject"];\nfileinto "a";\nredirect "x@example.org";\n\n  reject "no";', MSG)
    assert failed(result, "conflict")
    assert (result.error.line, result.error.column) == (5, 3)
    assert "either delivered or refused" in result.error.message


def test_too_many_actions():
    script = 'require "fileinto";\n' + "".join(f'fileinto "f{i}";\n' for i in range(40))
    assert failed(sieve(script, MSG), "limit", "too many actions")
    assert sieve(script, MSG, limits=Limits(max_actions=50)).error is None


def test_too_many_redirects_but_repeats_do_not_count():
    five = "".join(f'redirect "u{i}@example.org";' for i in range(5))
    assert failed(sieve(five, MSG), "limit", "too many redirects: more than 4")
    same = 'redirect "u@example.org";' * 10
    assert sieve(same, MSG).actions == (Redirect("u@example.org"),)


def test_cpu_limit_with_an_injected_clock():
    ticks = itertools.count()
    clock = lambda: next(ticks) * 0.01  # noqa: E731 - every look at the clock costs 10 ms
    script = "if true { keep; }\n" * 1000
    result = sieve(script, MSG, cpu_clock=clock, limits=Limits(cpu_seconds=2))
    assert failed(result, "cpu", "more than 2 s of CPU")


def test_cpu_limit_holds_inside_one_expensive_match():
    ticks = itertools.count()
    clock = lambda: next(ticks) * 0.001  # noqa: E731
    big = mail("Received: from somewhere\n" * 2000 + "\nx\n")
    keys = ", ".join(f'"*never{i}*"' for i in range(50))
    script = f'if header :matches "received" [{keys}] {{ discard; }}'
    assert failed(sieve(script, big, cpu_clock=clock, limits=Limits(cpu_seconds=0.5)), "cpu")


def test_glob_is_never_exponential():
    comp = COMPARATORS["i;ascii-casemap"]
    value = "a" * 5000
    assert glob("*a" * 100 + "*b", value, comp) is None
    assert glob("*a" * 100 + "*", value, comp) is not None


def test_include_depth_and_count_limits():
    chain = {("personal", f"s{i}"): f'require "include"; include "s{i + 1}";' for i in range(20)}
    chain[("personal", "s20")] = "keep;"
    result = sieve('require "include"; include "s0";', MSG, includes=DictIncludes(chain))
    assert failed(result, "limit", "nested too deeply")
    ok = sieve('require "include"; include "s15";', MSG, includes=DictIncludes(chain))
    assert ok.error is None and ok.actions == (Keep(),)
    many = {("personal", "x"): "keep;"}
    script = 'require "include";' + 'include "x";' * 300
    assert failed(sieve(script, MSG, includes=DictIncludes(many)), "limit", "too many includes")


def test_an_included_script_that_does_not_compile_is_a_runtime_error():
    bad = {("personal", "broken"): "fileinto"}
    result = sieve('require "include";\ninclude "broken";', MSG, includes=DictIncludes(bad))
    assert failed(result, "include", "is invalid")


def test_variables_are_bounded():
    script = 'require "variables";' + "".join(f'set "v{i}" "x";' for i in range(300))
    assert failed(sieve(script, MSG), "limit", "too many variables")


def test_a_runtime_invalid_folder_or_address_is_an_error_not_a_guess():
    script = 'require ["variables", "fileinto"]; set "f" ""; fileinto "${f}";'
    assert failed(sieve(script, MSG), words="invalid folder name")
    script = 'require ["variables"]; if header :matches "subject" "*" { redirect "${1}"; }'
    assert failed(sieve(script, MSG), words="invalid redirect address")


def test_redirect_refuses_a_message_that_is_looping():
    looped = mail("Received: x\n" * 60 + "From: a@b\n\nx\n")
    assert failed(sieve('redirect "x@example.org";', looped), "loop")


def test_the_runtime_error_leaves_no_state_to_record():
    script = 'require ["duplicate", "vacation"]; if duplicate { stop; } vacation "a"; vacation "b";'
    result = sieve(script, mail("Message-ID: <a@b>\nFrom: a@b\n\nx\n"))
    assert failed(result) and result.state_updates == ()


def test_unusual_but_valid_scripts_run():
    for script in ("", "# only a comment", "stop;", "discard;", 'require "fileinto"; fileinto "INBOX";'):
        result = sieve(script, MSG)
        assert result.error is None


@pytest.mark.parametrize("raw", [
    b"",  # empty message
    b"no header at all, no colon",
    b"Subject: \xff\xfe bad bytes\r\n\r\n\x00\x01",
    b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n",
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n" + b"--x\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n" * 300,
    b"Content-Type: message/rfc822\r\n\r\n" * 50,
    b"From: <<<@@@>>>, \"unterminated\r\nTo: (((\r\nDate: Feb 30 99\r\n\r\nx",
])
def test_hostile_messages_are_read_without_failing(raw):
    script = compile_script(
        'require ["body", "date", "relational", "variables", "fileinto", "envelope", "index"];\n'
        'if body :content "text" :contains "x" { fileinto "a"; }\n'
        'if body :raw :matches "*x*" { fileinto "b"; }\n'
        'if address :count "ge" "from" "0" { fileinto "c"; }\n'
        'if date :value "ge" "date" "year" "0" { fileinto "d"; }\n'
        'if header :matches "subject" "*" { set "s" "${1}"; }\n'
        'if address :domain :index 1 :last :matches ["to", "from"] "*" { fileinto "e"; }\n')
    from correo_server.sieve import Context, Envelope, run
    result = run(script, raw, Envelope("a@b.example", "c@d.example"), Context(mailbox="c@d.example", now=0))
    assert result.error is None
    assert any(isinstance(a, (Keep, FileInto)) for a in result.actions)
