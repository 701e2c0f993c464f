"""The examples of RFC 5228 (Sieve) give the results the RFC states."""
from __future__ import annotations

import pytest

from correo_server.sieve import (Discard, FileInto, Keep, Redirect, SieveError, SieveSyntaxError, compile_script)
from correo_server.sieve.strings import EncodingError, decode_encoded

from .conftest import mail, sieve


def kept(result) -> bool:
    return any(isinstance(a, Keep) for a in result.actions)


def folders(result) -> list[str]:
    return [a.folder for a in result.actions if isinstance(a, FileInto)]


def redirects(result) -> list[str]:
    return [a.address for a in result.actions if isinstance(a, Redirect)]


# -- 2.3 comments, 2.4 literals -----------------------------------------------------------------

def test_comments_are_whitespace(msg_a):
    script = """if size :over 100k { # this is a comment
                   discard;
                }
                if size :over 100K { /* this is a comment
                   this is still a comment */ discard /* this is a comment
                   */ ;
                }"""
    result = sieve(script, msg_a)
    assert result.error is None and kept(result)  # message A is small


@pytest.mark.parametrize("number,value", [("1", 1), ("100K", 102400), ("1M", 1048576), ("2G", 2147483648),
                                          ("2147483647", 2147483647)])
def test_numbers_with_quantifiers_are_powers_of_two(number, value):
    big = mail("Subject: x\n\n" + "x" * 10)
    assert kept(sieve(f"if size :under {number} {{ keep; }} else {{ discard; }}", big)) == (value > len(big))


def test_multiline_strings_are_dot_unstuffed_and_keep_their_line_ends(msg_a):
    script = ('require ["variables", "encoded-character"];\nset "t" text:\nline one\n..dotted\n.notdotted\n.\n;\n'
              'if string :is :comparator "i;octet" "${t}" '
              '"line one${hex:0d 0a}.dotted${hex:0d 0a}.notdotted${hex:0D 0A}" { discard; }')
    assert not kept(sieve(script, msg_a))


@pytest.mark.parametrize("written,meaning", [
    ('"$${hex:40}"', "$@"), ('"${hex: 40 }"', "@"), ('"${HEX: 40}"', "@"), ('"${hex:40"', "${hex:40"),
    ('"${hex:400}"', "${hex:400}"), ('"${hex:4${hex:30}}"', "${hex:40}"), ('"${unicode:40}"', "@"),
    ('"${ unicode:40}"', "${ unicode:40}"), ('"${UNICODE:40}"', "@"), ('"${UnICoDE:0000040}"', "@"),
    ('"${Unicode:40}"', "@"), ('"${Unicode:Cool}"', "${Unicode:Cool}"),
])
def test_encoded_character_table_of_section_2_4_2_4(written, meaning):
    assert decode_encoded(written[1:-1]) == meaning


@pytest.mark.parametrize("written", ["${unicode:200000}", "${Unicode:DF01}"])
def test_encoded_character_out_of_unicode_is_an_error(written):
    with pytest.raises(EncodingError):
        decode_encoded(written)
    with pytest.raises(SieveError) as err:
        compile_script(f'require "encoded-character";\nif header :contains "subject" "{written}" {{ stop; }}')
    assert err.value.line == 2


def test_encoded_character_example_discards_message_b(msg_b):
    script = 'require "encoded-character";\nif header :contains "Subject" "$${hex:24 24}" { discard; }'
    assert not kept(sieve(script, msg_b))


def test_encoded_characters_without_require_are_plain_text(msg_b):
    script = 'if header :contains "Subject" "$${hex:24 24}" { discard; }'
    assert kept(sieve(script, msg_b))


# -- 2.5 tests, 2.7 matching ----------------------------------------------------------------------

def test_test_list_example(msg_a):
    script = 'if anyof (not exists ["From", "Date"], header :contains "from" "fool@example.com") { discard; }'
    assert kept(sieve(script, msg_a))


@pytest.mark.parametrize("tests,expected", [
    ("allof (false, false)", False), ("allof (false, true)", False), ("allof (true, true)", True),
    ("anyof (false, false)", False), ("anyof (false, true)", True), ("anyof (true, true)", True),
    ("not true", False), ("not false", True), ("true", True), ("false", False),
])
def test_allof_anyof_not_truth_tables(msg_a, tests, expected):
    assert (not kept(sieve(f"if {tests} {{ discard; }}", msg_a))) == expected


def test_comparator_example_octet_is_case_sensitive():
    script = 'if header :contains :comparator "i;octet" "Subject" "MAKE MONEY FAST" { discard; }'
    assert not kept(sieve(script, mail("Subject: You can MAKE MONEY FAST\n\nx\n")))
    assert kept(sieve(script, mail("Subject: You can Make Money Fast\n\nx\n")))


@pytest.mark.parametrize("test,expected", [
    ('header :is ["X-Caffeine"] [""]', False),
    ('header :contains ["X-Caffeine"] [""]', True),
    ('header :is ["X-Decaf"] [""]', False),
    ('header :contains ["X-Decaf"] [""]', False),
])
def test_header_x_caffeine_examples(test, expected):
    msg = mail("X-Caffeine: C8H10N4O2\nSubject: coffee\n\nx\n")
    assert (not kept(sieve(f"if {test} {{ discard; }}", msg))) == expected


def test_header_names_never_match_with_a_colon_and_invalid_names_are_no_error(msg_a):
    assert kept(sieve('if header :contains "From:" "coyote" { discard; }', msg_a))
    assert kept(sieve('if header :contains "Fr om" "coyote" { discard; }', msg_a))


def test_header_values_are_unfolded_and_trimmed():
    msg = mail("Subject:   a folded\n\tsubject   \n\nx\n")
    assert not kept(sieve('if header :is "subject" "a folded\tsubject" { discard; }', msg))


def test_matches_wildcards_and_escapes():
    msg = mail("Subject: frobnitzm*?\n\nx\n")
    for pattern, expected in [("frob*", True), ("f?ob*", True), ("*nit*", True), ("frobnitzm", False),
                              ("frobnitzm\\\\*\\\\?", True), ("frobnitzm\\\\?\\\\*", False), ("*", True),
                              ("?", False), ("frob?", False)]:
        assert (not kept(sieve(f'if header :matches "subject" "{pattern}" {{ discard; }}', msg))) == expected, pattern


def test_contains_examples():
    msg = mail("Subject: frobnitzm\n\nx\n")
    assert not kept(sieve('if header :contains "subject" ["frob", "nit"] { discard; }', msg))
    assert kept(sieve('if header :contains "subject" "fbm" { discard; }', msg))
    assert kept(sieve('if header :is "subject" "frob" { discard; }', msg))


def test_address_parts_and_never_the_phrase():
    msg = mail('From: "Tim Smith" <Tim@Example.COM> (comment)\nTo: group: a@b.example, c@d.example;\n\nx\n')
    assert not kept(sieve('if address :is :all "from" "tim@example.com" { discard; }', msg))
    assert not kept(sieve('if address :localpart :is "from" "tim" { discard; }', msg))
    assert not kept(sieve('if address :domain :is "from" "example.com" { discard; }', msg))
    assert kept(sieve('if address :contains "from" "Smith" { discard; }', msg))
    assert not kept(sieve('if address :is "to" "c@d.example" { discard; }', msg))  # inside a group
    assert kept(sieve('if address :contains "to" "group" { discard; }', msg))  # never the group name


def test_invalid_addresses_never_match_localpart_or_domain():
    msg = mail("From: not an address\n\nx\n")
    assert kept(sieve('if address :localpart :contains "from" "not" { discard; }', msg))
    assert kept(sieve('if address :domain :contains "from" "" { discard; }', msg))


# -- 2.10 evaluation, 3 control, 4 actions ---------------------------------------------------------

def test_implicit_keep_when_no_action(msg_a):
    result = sieve("if size :over 500K { discard; }", msg_a)
    assert result.actions == (Keep(implicit=True),)


@pytest.mark.parametrize("msg", ["rfc-a.eml", "rfc-b.eml"])
def test_if_elsif_else_example_drops_both_messages(msg):
    from .conftest import message
    script = """require "fileinto";
             if header :contains "from" "coyote" {
                discard;
             } elsif header :contains ["subject"] ["$$$"] {
                discard;
             } else {
                fileinto "INBOX";
             }"""
    result = sieve(script, message(msg))
    assert result.actions == (Discard(),)


def test_if_elsif_redirect_example(msg_a, msg_b):
    script = """if header :contains ["From"] ["coyote"] {
                redirect "acm@example.com";
             } elsif header :contains "Subject" "$$$" {
                redirect "postmaster@example.com";
             } else {
                redirect "field@example.com";
             }"""
    assert redirects(sieve(script, msg_a)) == ["acm@example.com"]
    assert redirects(sieve(script, msg_b)) == ["postmaster@example.com"]
    assert redirects(sieve(script, mail("From: x@y\n\nz\n"))) == ["field@example.com"]


def test_else_if_is_not_sieve():
    with pytest.raises(SieveError):
        compile_script("if true { stop; } else if false { stop; }")


def test_require_after_a_command_is_an_error():
    with pytest.raises(SieveError) as err:
        compile_script('keep;\nrequire "fileinto";')
    assert (err.value.line, err.value.column) == (2, 1)


def test_stop_takes_the_implicit_keep(msg_a):
    assert sieve("stop; discard;", msg_a).actions == (Keep(implicit=True),)


def test_fileinto_example_files_message_a(msg_a):
    script = 'require "fileinto";\nif header :contains ["from"] "coyote" { fileinto "INBOX.harassment"; }'
    assert sieve(script, msg_a).actions == (FileInto("INBOX.harassment"),)


def test_redirect_everything_example(msg_a):
    assert sieve('redirect "bart@example.com";', msg_a).actions == (Redirect("bart@example.com"),)


def test_keep_examples_are_equivalent(msg_a):
    big = mail("Subject: big\n\n" + "x" * 2_000_000)
    for script in ("if size :under 1M { keep; } else { discard; }", "if not size :under 1M { discard; }"):
        assert kept(sieve(script, msg_a)) and not kept(sieve(script, big))


def test_discard_example_and_discard_with_fileinto_is_fileinto():
    msg = mail("From: idiot@example.com\n\nx\n")
    assert sieve('if header :contains ["from"] ["idiot@example.com"] { discard; }', msg).actions == (Discard(),)
    result = sieve('require "fileinto"; fileinto "x"; discard;', msg)
    assert folders(result) == ["x"] and not kept(result)


def test_a_message_is_stored_once_per_folder(msg_a):
    result = sieve('require "fileinto"; fileinto "a"; fileinto "a"; keep; fileinto "INBOX";', msg_a)
    assert result.actions == (FileInto("a"), Keep())


def test_size_exactly_at_the_limit_is_neither_over_nor_under():
    msg = mail("Subject: x\n\n").ljust(4000, b"x")
    assert len(msg) == 4000
    assert kept(sieve("if anyof (size :over 4000, size :under 4000) { discard; }", msg))


def test_envelope_example():
    msg = mail("From: x@y\n\nz\n")
    script = 'require "envelope";\nif envelope :all :is "from" "tim@example.com" { discard; }'
    assert not kept(sieve(script, msg, sender="tim@example.com"))
    assert kept(sieve(script, msg, sender="tom@example.com"))


def test_null_envelope_sender_is_the_empty_string_whatever_the_part():
    script = 'require "envelope";\nif envelope :domain :is "from" "" { discard; }'
    assert not kept(sieve(script, mail("From: x@y\n\nz\n"), sender=""))


def test_extended_example_of_section_9():
    script = """require ["fileinto"];
    if header :is "Sender" "owner-ietf-mta-filters@imc.org" { fileinto "filter"; }
    elsif address :DOMAIN :is ["From", "To"] "example.com" { keep; }
    elsif anyof (NOT address :all :contains ["To", "Cc", "Bcc"] "me@example.com",
                 header :matches "subject" ["*make*money*fast*", "*university*dipl*mas*"]) { fileinto "spam"; }
    else { fileinto "personal"; }"""
    assert folders(sieve(script, mail("Sender: owner-ietf-mta-filters@imc.org\n\nx\n"))) == ["filter"]
    assert sieve(script, mail("From: a@example.com\n\nx\n")).actions == (Keep(),)
    assert folders(sieve(script, mail("From: a@b.org\nTo: c@d.org\n\nx\n"))) == ["spam"]
    assert folders(sieve(script, mail("To: list@b.org\nCc: me@example.com\nSubject: get a university diplomas\n\nx\n"))) == ["spam"]
    assert folders(sieve(script, mail("From: a@b.org\nCc: me@example.com\nSubject: hi\n\nx\n"))) == ["personal"]


def test_syntax_errors_name_line_and_column():
    with pytest.raises(SieveSyntaxError) as err:
        compile_script('require "fileinto";\nif true {\n  fileinto "x"\n}\n')
    assert (err.value.line, err.value.column) == (4, 1)
    assert "';'" in err.value.message
