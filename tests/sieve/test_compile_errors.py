"""A script that cannot run is refused with errors a person can act on: where, and what to do."""
from __future__ import annotations

import pytest

from correo_server.sieve import SieveCompileError, SieveError, SieveSyntaxError, compile_script


def error(text, **kw) -> SieveError:
    with pytest.raises(SieveError) as exc:
        compile_script(text, **kw)
    return exc.value


@pytest.mark.parametrize("text,line,column,words", [
    ('keep', 1, 5, "expected ';'"),
    ('if true {\n  keep;\n', 3, 1, "not closed"),
    ('keep;\n}', 2, 1, "without a matching"),
    ('fileinto "x', 1, 10, "unterminated string"),
    ('/* never closed', 1, 1, "unterminated comment"),
    ('keep;\nset text:\nno end\n', 2, 5, "unterminated multi-line"),
    ('if header :is "a" ["b", ] { stop; }', 1, 25, "expected a string"),
    ('if header :is "a" [] { stop; }', 1, 20, "at least one string"),
    ('if 12x { stop; }', 1, 4, "invalid number"),
    ('if size :over 99999999999999999999999 { stop; }', 1, 15, "too large"),
    ('keep;\n  @', 2, 3, "unexpected character '@'"),
    ('if anyof (true; false) { stop; }', 1, 15, "expected ',' or ')'"),
    ('if : { stop; }', 1, 4, "tag"),
])
def test_syntax_errors_say_where(text, line, column, words):
    err = error(text)
    assert isinstance(err, SieveSyntaxError)
    assert (err.line, err.column) == (line, column), str(err)
    assert words in err.message


def test_script_bytes_that_are_not_utf8_or_hold_nul_or_stray_cr():
    assert (error(b'keep;\n# caf\xe9\n').line, error(b'keep;\n# caf\xe9\n').column) == (2, 6)
    assert "NUL" in error(b'keep;\x00').message
    assert "carriage return" in error(b'keep;\rdiscard;').message
    compile_script(b"keep;\r\n# CRLF and LF both end lines\ndiscard;\r\n")


@pytest.mark.parametrize("text,words", [
    ('require "enotify";', "'enotify' (RFC 5435 notifications) is not supported"),
    ('require "vnd.dovecot.debug";', "not supported"),
    ('require "filinto";', "did you mean 'fileinto'"),
    ('fileinto "x";', 'require "fileinto"'),
    ('if envelope "to" "x" { stop; }', 'require "envelope"'),
    ('filein "x";', "did you mean 'fileinto'"),
    ('if heder "a" "b" { stop; }', "did you mean 'header'"),
    ('header "a" "b";', "is a test, not a command"),
    ('if keep { stop; }', "is a command, not a test"),
    ('if header :contans "a" "b" { stop; }', "did you mean ':contains'"),
    ('if header :is :is "a" "b" { stop; }', "given twice"),
    ('if header :is :contains "a" "b" { stop; }', "cannot be used together"),
    ('if header "a" { stop; }', "takes 2 arguments (header names, keys), found 1"),
    ('if header "a" :is "b" { stop; }', "must come before"),
    ('redirect :copy "a@b.example";', 'require "copy"'),
    ('if header :count "ge" "a" "1" { stop; }', 'require "relational"'),
    ('require "relational"; if header :value "bigger" "a" "1" { stop; }', "needs a relation"),
    ('if header :comparator "i;nope" "a" "b" { stop; }', "unknown comparator"),
    ('keep { stop; }', "takes no block"),
    ('if true;', "needs a block"),
    ('if true, false { stop; }', "expected ';' or '{'"),
    ('if (true, false) { stop; }', "exactly one test"),
    ('if allof true { stop; }', "needs a list of tests in parentheses"),
    ('else { stop; }', "without an 'if'"),
    ('redirect "not an address";', "invalid redirect address"),
    ('require "fileinto"; fileinto "";', "cannot be empty"),
    ('if size 100 { stop; }', "':over' or ':under'"),
    ('require "date"; if date "date" "fortnight" "x" { stop; }', "unknown date part"),
    ('require "date"; if date :zone "CET" "date" "year" "x" { stop; }', "invalid time zone"),
    ('if address "subject" "x" { stop; }', "holds no addresses"),
    ('require "envelope"; if envelope "auth" "x" { stop; }', "unknown envelope part"),
    ('require "include"; include "../etc/passwd";', "cannot hold '/'"),
    ('require "vacation"; vacation :from "not valid" "x";', "invalid ':from'"),
    ('require ["variables", "include"]; set "x" "${env.home}";', "unknown variable namespace"),
    ('require "variables"; set "x" "${global.a}";', 'require "include"'),
])
def test_compile_errors_say_what_to_do(text, words):
    err = error(text)
    assert words in str(err), str(err)
    assert err.line >= 1 and err.column >= 1


def test_every_problem_is_reported_at_once_each_with_its_place():
    err = error('require "fileinto";\nfilein "a";\nif heder "x" "y" { stop; }\nredirect "bad";\n')
    assert isinstance(err, SieveCompileError)
    assert [(d.line, d.column) for d in err.diagnostics] == [(2, 1), (3, 4), (4, 1)]
    assert str(err).splitlines()[0].startswith("script:2:1: unknown command 'filein'")


def test_errors_carry_the_script_name_for_editors_and_status_fields():
    err = error("keep", name="vacation.sieve")
    assert str(err) == "vacation.sieve:1:5: expected ';' or '{' to end the 'keep' command, found the end of the script"
    assert err.human().startswith("line 1, column 5: ")


def test_script_size_limit():
    err = error("#" * 2000 + "\nkeep;", max_size=1000)
    assert "more than the 1000 allowed" in err.message
    compile_script("keep;" * 100_000)  # half a megabyte is fine by default


def test_nesting_is_limited_but_fifteen_levels_work():
    compile_script("if true { " * 15 + "keep;" + " }" * 15)
    compile_script("if " + "not " * 15 + "true { keep; }")
    assert "nested too deeply" in error("if true { " * 40 + "keep;" + " }" * 40).message
    assert "nested too deeply" in error("if " + "not " * 5000 + "true { keep; }").message


def test_require_itself_may_name_comparators_and_both_vacation_names():
    script = compile_script('require ["comparator-i;octet", "comparator-i;ascii-numeric", "vacation-seconds"];\n'
                            'vacation :seconds 60 "x";')
    assert "vacation" in script.capabilities
