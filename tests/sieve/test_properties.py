"""Properties that hold for any input: the parser only ever refuses with a SieveError,
runs never raise, :matches agrees with a reference matcher, flags stay a set."""
from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from correo_server.sieve import Context, Envelope, Keep, SieveError, compile_script, run
from correo_server.sieve.comparators import COMPARATORS, glob
from correo_server.sieve.fuzz import fuzz_one_input
from correo_server.sieve.interpreter import normalize_flags

CORPUS = Path(__file__).parent / "corpus"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENS = ["if", "elsif", "else", "require", "keep", "discard", "stop", "fileinto", "redirect", "header",
          "address", "envelope", "body", "allof", "anyof", "not", "true", "false", "size", "exists", "set",
          "string", "vacation", "include", "global", ":is", ":contains", ":matches", ":count", ":value",
          ":comparator", ":over", ":under", ":copy", ":flags", ":days", ":index", ":last", ":raw", ":content",
          '"fileinto"', '"variables"', '"body"', '"gt"', '"i;octet"', '"i;ascii-numeric"', '"${1}"', '"*"',
          '"subject"', '"a@b.example"', "[", "]", "(", ")", "{", "}", ",", ";", "10K", "0", "text:\nx\n.\n",
          "# c\n", "/* c */", '"${hex:41}"', '"\\"', "\n"]


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_compile_or_fail_with_a_sieve_error(data):
    fuzz_one_input(data)


@FAST
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_token_soup_compiles_or_fails_with_a_sieve_error(tokens):
    fuzz_one_input(" ".join(tokens).encode())


def test_the_fuzz_entry_point_runs_the_whole_corpus():
    for path in sorted((CORPUS / "scripts").glob("*.sieve")):
        fuzz_one_input(path.read_bytes())
        for cut in (10, 50, 200):  # truncated scripts too
            fuzz_one_input(path.read_bytes()[:cut])


def _reference(pattern: str, value: str) -> bool:
    """:matches by translation to a regular expression (not used by correo)."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*?" if ch == "*" else "." if ch == "?" else re.escape(ch))
        i += 1
    return re.fullmatch("".join(out), value, re.DOTALL) is not None


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab*?\\", max_size=12), st.text(alphabet="ab*?\\", max_size=16))
def test_glob_agrees_with_a_regular_expression(pattern, value):
    found = glob(pattern, value, COMPARATORS["i;octet"])
    assert (found is not None) == _reference(pattern, value)
    if found is not None:
        assert found[0] == value
        stars_and_qmarks = len(re.findall(r"\\.|[*?]", pattern)) - len(re.findall(r"\\.", pattern))
        assert len(found) == 1 + stars_and_qmarks


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="aAbB*?", max_size=10), st.text(alphabet="aAbB", max_size=14))
def test_casemap_glob_is_octet_glob_on_lower_case(pattern, value):
    casemap = glob(pattern, value, COMPARATORS["i;ascii-casemap"]) is not None
    assert casemap == (glob(pattern.lower(), value.lower(), COMPARATORS["i;octet"]) is not None)


@FAST
@given(st.lists(st.text(alphabet=st.sampled_from(list("ab\\SEN$ ()*")), max_size=8), max_size=6))
def test_flags_are_a_set_of_valid_imap_flags(values):
    flags = normalize_flags(values)
    assert len({f.lower() for f in flags}) == len(flags)
    for f in flags:
        assert " " not in f and "(" not in f and "*" not in f
        assert not f.startswith("\\") or f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
    assert normalize_flags(flags) == flags


HEADERS = st.sampled_from(["From", "To", "Cc", "Subject", "Date", "Received", "Content-Type", "X-Odd"])
VALUES = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x2FF, blacklist_characters="\r\n"),
                 max_size=40)


@FAST
@given(st.lists(st.tuples(HEADERS, VALUES), max_size=8), st.binary(max_size=200))
def test_corpus_scripts_run_on_any_message_and_errors_only_keep(fields, body):
    raw = b"".join(f"{n}: {v}\r\n".encode("utf-8", "surrogatepass") for n, v in fields) + b"\r\n" + body
    for name in ("base-address-parts", "body-mime", "date", "relational", "variables-match", "subaddress"):
        script = compile_script((CORPUS / "scripts" / f"{name}.sieve").read_bytes(), name)
        result = run(script, raw, Envelope("a@b.example", "ana+x@example.com"),
                     Context(mailbox="ana@example.com", now=0))
        assert result.actions
        if result.error is not None:  # e.g. a control character from the subject in a folder name
            assert result.actions == (Keep(implicit=True),)


@FAST
@given(st.text(max_size=60))
def test_quoted_strings_round_trip_through_the_lexer(text):
    text = text.replace("\r", "").replace("\x00", "")
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    try:
        script = compile_script(f"require \"variables\"; set \"x\" {quoted};")
    except SieveError:
        raise AssertionError(f"valid string refused: {quoted!r}")
    (call,) = script.commands
    value = call.args[1]
    assert str(value) == text.replace("\n", "\r\n")
