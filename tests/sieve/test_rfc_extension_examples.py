"""The examples of each Sieve extension's RFC give the results the RFC states."""
from __future__ import annotations

import pytest

from correo_server.sieve import (Discard, FileInto, Keep, Redirect, Reject, ScanVerdict, SieveError, Vacation,
                                 compile_script)
from correo_server.sieve.tracking import MemoryState

from .conftest import NOW, DictIncludes, mail, message, sieve


def folders(result) -> list[str]:
    return [a.folder for a in result.actions if isinstance(a, FileInto)]


def stores(result) -> list[tuple[str, tuple | None]]:
    return result.stores()


# -- RFC 5429 reject / ereject ---------------------------------------------------------------------

def test_rfc5429_reject_example(msg_a):
    script = """require ["reject"];
    if header :contains "from" "coyote@desert.example.org" {
        reject text:
I am not taking mail from you, and I don't
want your birdseed, either!
.
        ;
    }"""
    result = sieve(script, msg_a)
    assert result.actions == (Reject("I am not taking mail from you, and I don't\r\n"
                                     "want your birdseed, either!\r\n"),)
    assert not result.implicit_keep


def test_rfc5429_ereject_example():
    script = 'require ["ereject"];\nif address "from" "someone@example.com" {\n' \
             '  ereject "I no longer accept mail from this address";\n}'
    result = sieve(script, mail("From: someone@example.com\n\nx\n"))
    assert result.actions == (Reject("I no longer accept mail from this address", extended=True),)


def test_rfc5429_ereject_spamtest_example():
    script = """require ["ereject", "spamtest", "fileinto", "comparator-i;ascii-numeric", "relational"];
    if spamtest :value "ge" :comparator "i;ascii-numeric" "6" {
        ereject text:
AntiSpam engine thinks your message is spam.
It is therefore being refused.
Please call 1-900-PAY-US if you want to reach us.
.
        ;
    } elsif spamtest :value "ge" :comparator "i;ascii-numeric" "4" {
        fileinto "Suspect";
    }"""
    msg = mail("From: a@b\n\nx\n")
    assert isinstance(sieve(script, msg, verdict=ScanVerdict(spam_score=14, spam_max=15)).actions[0], Reject)
    assert folders(sieve(script, msg, verdict=ScanVerdict(spam_score=6, spam_max=15))) == ["Suspect"]
    assert sieve(script, msg, verdict=ScanVerdict(spam_score=0.5)).implicit_keep


@pytest.mark.parametrize("other", ['keep;', 'require_fileinto "x";', 'redirect "a@b.example";',
                                  'vacation "away";', 'reject "twice";'])
def test_rfc5429_reject_refuses_to_be_combined_with_delivery_or_vacation(msg_a, other):
    other = other.replace("require_fileinto", "fileinto")
    for script in (f'require ["reject", "fileinto", "vacation"]; {other} reject "no";',
                   f'require ["reject", "fileinto", "vacation"]; reject "no"; {other}'):
        result = sieve(script, msg_a)
        assert result.error is not None and result.error.kind == "conflict"
        assert result.actions == (Keep(implicit=True),)


def test_rfc5429_reject_with_discard_is_fine(msg_a):
    assert sieve('require "reject"; discard; reject "no";', msg_a).of(Reject) == [Reject("no")]


# -- RFC 3894 copy ----------------------------------------------------------------------------------

def test_rfc3894_copy_keeps_the_implicit_keep(msg_a):
    result = sieve('require ["copy", "fileinto"];\nfileinto :copy "incoming";\nredirect :copy "x@example.org";',
                   msg_a)
    assert result.actions == (FileInto("incoming", copy=True), Redirect("x@example.org", copy=True),
                              Keep(implicit=True))


def test_rfc3894_copy_needs_require(msg_a):
    with pytest.raises(SieveError, match="copy"):
        compile_script('redirect :copy "x@example.org";')


# -- RFC 5232 imap4flags ------------------------------------------------------------------------------

def test_rfc5232_flags_follow_the_internal_variable_to_the_implicit_keep():
    msg = mail("From: a@b\nSubject: big\n\n" + "x" * 600_000)
    result = sieve('require "imap4flags";\nif size :over 500K { setflag "\\\\Deleted"; }', msg)
    assert result.actions == (Keep(flags=("\\Deleted",), implicit=True),)


def test_rfc5232_setflag_on_a_variable_and_fileinto_flags():
    script = """require ["imap4flags", "variables", "fileinto"];
    if header :contains "from" "boss@frobnitzm.example.edu" {
        setflag "flagvar" "\\\\Flagged";
        fileinto :flags "${flagvar}" "INBOX.From Boss";
    }"""
    result = sieve(script, mail("From: boss@frobnitzm.example.edu\n\nx\n"))
    assert stores(result) == [("INBOX.From Boss", ("\\Flagged",))]


def test_rfc5232_addflag_forms_are_equivalent():
    for adds in ('addflag "flagvar" "\\\\Deleted"; addflag "flagvar" "\\\\Answered";',
                 'addflag "flagvar" ["\\\\Deleted", "\\\\Answered"];',
                 'addflag "flagvar" "\\\\Deleted \\\\Answered";',
                 'addflag "flagvar" "\\\\Answered \\\\Deleted";'):
        script = f'require ["imap4flags", "variables"]; {adds} keep :flags "${{flagvar}}";'
        (folder, flags), = stores(sieve(script, mail("From: a@b\n\nx\n")))
        assert sorted(flags) == ["\\Answered", "\\Deleted"]


def test_rfc5232_removeflag_example():
    script = """require ["imap4flags", "variables", "fileinto"];
    if header :contains "Disposition-Notification-To" "mel@example.com" { addflag "flagvar" "$MDNRequired"; }
    if header :contains "from" "imap@cac.washington.example.edu" {
        removeflag "flagvar" "$MDNRequired";
        fileinto :flags "${flagvar}" "INBOX.imap-list";
    }"""
    msg = mail("Disposition-Notification-To: mel@example.com\nFrom: imap@cac.washington.example.edu\n\nx\n")
    assert stores(sieve(script, msg)) == [("INBOX.imap-list", ())]


@pytest.mark.parametrize("test,expected", [
    ('hasflag :is "b A"', True), ('hasflag ["b","A"]', True), ('hasflag "C"', False)])
def test_rfc5232_hasflag_on_the_internal_variable(test, expected):
    script = f'require "imap4flags"; setflag "A B"; if {test} {{ discard; }}'
    assert (not sieve(script, mail("From: a@b\n\nx\n")).implicit_keep) == expected


@pytest.mark.parametrize("keys,expected", [
    ('"Junk"', True), ('"forward"', True), ('["label", "forward"]', True), ('["junk", "forward"]', True),
    ('"junk forward"', True), ('"label"', False), ('["label1", "label2"]', False)])
def test_rfc5232_hasflag_contains_examples(keys, expected):
    script = ('require ["imap4flags", "variables"];\n'
              'set "MyVar" "NonJunk Junk gnus-forward $Forwarded NotJunk JunkRecorded $Junk $NotJunk";\n'
              f'if hasflag :contains "MyVar" {keys} {{ discard; }}')
    assert (not sieve(script, mail("From: a@b\n\nx\n")).implicit_keep) == expected


def test_rfc5232_hasflag_count_example():
    script = ('require ["imap4flags", "variables", "relational", "comparator-i;ascii-numeric"];\n'
              'set "MyFlags" "A B";\n'
              'if hasflag :count "ge" :comparator "i;ascii-numeric" "MyFlags" "2" { discard; }')
    assert not sieve(script, mail("From: a@b\n\nx\n")).implicit_keep


def test_rfc5232_extended_example():
    script = """require ["fileinto", "imap4flags", "variables"];
    if size :over 1M {
        addflag "MyFlags" "Big";
        if header :is "From" "boss@company.example.com" { addflag "MyFlags" "\\\\Flagged"; }
        fileinto :flags "${MyFlags}" "Big messages";
    }
    if header :is "From" "grandma@example.net" {
        addflag "MyFlags" ["\\\\Answered", "$MDNSent"];
        fileinto :flags "${MyFlags}" "GrandMa";
    }
    if header :is "Sender" "owner-ietf-mta-filters@example.org" {
        set "MyFlags" "\\\\Flagged $Work";
        keep :flags "${MyFlags}";
    }"""
    big = mail("From: boss@company.example.com\n\n" + "x" * 1_100_000)
    assert stores(sieve(script, big)) == [("Big messages", ("Big", "\\Flagged"))]
    grandma = mail("From: grandma@example.net\n\nx\n")
    assert stores(sieve(script, grandma)) == [("GrandMa", ("\\Answered", "$MDNSent"))]
    lst = mail("Sender: owner-ietf-mta-filters@example.org\n\nx\n")
    assert stores(sieve(script, lst)) == [("INBOX", ("\\Flagged", "$Work"))]


def test_rfc5232_last_flags_win_when_a_folder_is_stored_twice():
    script = 'require ["imap4flags", "fileinto"]; fileinto :flags "A" "f"; fileinto :flags "B" "f";'
    assert stores(sieve(script, mail("From: a@b\n\nx\n"))) == [("f", ("B",))]


def test_rfc5232_invalid_and_recent_flags_are_ignored():
    script = 'require "imap4flags"; addflag ["\\\\Recent", "\\\\Bogus", "ok", "(bad", "\\\\seen"];'
    assert stores(sieve(script, mail("From: a@b\n\nx\n"))) == [("INBOX", ("ok", "\\Seen"))]


# -- RFC 5173 body ---------------------------------------------------------------------------------------

BODY_EXAMPLE = message("mime.eml")


@pytest.mark.parametrize("test,expected", [
    ('body :content "multipart" :contains "MIME"', True),
    ('body :content "text/plain" :contains "Hello"', True),
    ('body :content "text/html" :contains "Hello"', True),
    ('body :content "text" :contains "Hello"', True),
    ('body :content "message/rfc822" :contains "Hello"', True),  # "hello request" in the nested header
    ('body :content "message/rfc822" :contains "Please say"', False),  # the nested body is text/plain
    ('body :content "multipart" :contains "Please say"', False),
    ('body :content "multipart" :contains "Hello"', False),
    ('body :content "text/plain" :contains "end of the inner"', False),
    ('body :raw :contains "Content-Type: message/rfc822"', True),
    ('body :content "text/" :contains ""', False),
    ('body :content "image" :contains ""', False),
])
def test_rfc5173_content_example(test, expected):
    script = f'require "body"; if {test} {{ discard; }}'
    assert (not sieve(script, BODY_EXAMPLE).implicit_keep) == expected


def test_rfc5173_missile_and_jukebox_examples():
    script = """require ["body", "fileinto"];
    if body :content "text" :contains ["missile", "coordinates"] { fileinto "secrets"; }
    if body :content "audio/mp3" :contains "" { fileinto "jukebox"; }"""
    msg = mail("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nthe missile\n"
               "--b\nContent-Type: audio/mp3\nContent-Transfer-Encoding: base64\n\nAAAA\n--b--\n")
    assert folders(sieve(script, msg)) == ["secrets", "jukebox"]


def test_rfc5173_raw_example_sees_undecoded_content():
    msg = mail("Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\nTUFLRSBNT05FWSBGQVNU\n")
    assert sieve('require "body"; if body :raw :contains "MAKE MONEY FAST" { discard; }', msg).implicit_keep
    assert not sieve('require "body"; if body :text :contains "MAKE MONEY FAST" { discard; }', msg).implicit_keep


def test_rfc5173_header_only_message_fails_every_body_test():
    msg = message("headeronly.eml")
    for test in ('body :raw :contains ""', 'body :text :is ""', 'body :content "" :contains ""'):
        assert sieve(f'require "body"; if {test} {{ discard; }}', msg).implicit_keep


def test_rfc5173_text_transform_decodes_charsets_and_html():
    msg = message("html.eml")
    assert not sieve('require "body"; if body :text :contains "project schedule" { discard; }', msg).implicit_keep
    assert not sieve('require "body"; if body :text :contains "café" { discard; }', msg).implicit_keep


def test_rfc5173_body_matches_set_no_match_variables():
    script = ('require ["body", "variables", "fileinto"]; set "x" "unset";\n'
              'if body :matches "*birdseed*" { fileinto "got-${1}"; }')
    assert folders(sieve(script, message("rfc-a.eml"))) == ["got-"]


# -- RFC 5229 variables ------------------------------------------------------------------------------------

@pytest.mark.parametrize("written,value", [
    ("&%${}!", "&%${}!"), ("${doh!}", "${doh!}"), ("${full}", ""), ("${company}", "ACME"),
    ("${BAD${Company}", "${BADACME"), ("${President, ${Company} Inc.}", "${President, ACME Inc.}"),
    ("${fo\\\\o}", "${fo\\o}"), ("\\\\${company}", "\\ACME"), ("\\${company}", "ACME"),
])
def test_rfc5229_string_interpretation_examples(written, value):
    script = ('require ["variables", "fileinto"]; set "company" "ACME";\n'
              f'set "r" "{written}"; fileinto "${{r}}";')
    assert folders(sieve(script, mail("From: a@b\n\nx\n"))) == [value or "INBOX"] or value == ""


def test_rfc5229_unknown_variable_is_empty():
    script = 'require ["variables"]; if string :is "${full}" "" { discard; }'
    assert not sieve(script, mail("From: a@b\n\nx\n")).implicit_keep


def test_rfc5229_encoded_character_before_variables():
    script = ('require ["encoded-character", "variables"];\nset "name" "Ethelbert";\n'
              'if header :contains "Subject" "dear${hex:20 24 7b 4e}ame}" { discard; }')
    assert not sieve(script, mail("Subject: Oh dear Ethelbert\n\nx\n")).implicit_keep


def test_rfc5229_match_variable_examples():
    script = """require ["fileinto", "variables"];
    if header :matches "List-ID" "*<*@*" { fileinto "INBOX.lists.${2}"; stop; }
    if header :matches "Subject" "[*] *" { fileinto "INBOX.lists.${1}"; stop; }
    if address :matches ["To", "Cc"] ["coyote@**.com", "wile@**.com"] { fileinto "INBOX.business.${2}"; stop; }"""
    assert folders(sieve(script, mail("List-ID: Sieve <sieve@ietf.org>\n\nx\n"))) == ["INBOX.lists.sieve"]
    assert folders(sieve(script, mail("Subject: [acme-users] [fwd] version 1.0 is out\n\nx\n"))) == \
        ["INBOX.lists.acme-users"]
    assert folders(sieve(script, mail("To: coyote@ACME.Example.COM\n\nx\n"))) == ["INBOX.business.ACME.Example"]


def test_rfc5229_match_variables_hold_every_wildcard_and_zero_is_the_whole_value():
    script = ('require ["variables", "fileinto"];\nif header :matches "Subject" "[*] *" '
              '{ set "a" "${0}|${1}|${2}|${3}"; fileinto "${a}"; }')
    assert folders(sieve(script, mail("Subject: [acme-users] [fwd] version 1.0 is out\n\nx\n"))) == \
        ["[acme-users] [fwd] version 1.0 is out|acme-users|[fwd] version 1.0 is out|"]


def test_rfc5229_short_circuit_leaves_match_variables_unset():
    script = ('require ["variables", "fileinto"];\n'
              'if anyof (true, address :domain :matches "To" "*.com") { fileinto "x${1}"; }')
    assert folders(sieve(script, mail("To: a@b.com\n\nx\n"))) == ["x"]


@pytest.mark.parametrize("modifiers,value", [
    ("", "juMBlEd lETteRS"), (":length", "15"), (":lower", "jumbled letters"), (":upperfirst", "JuMBlEd lETteRS"),
    (":upperfirst :lower", "Jumbled letters"), (":lowerfirst :upper", "jUMBLED LETTERS"), (":upper", "JUMBLED LETTERS"),
])
def test_rfc5229_set_modifier_examples(modifiers, value):
    script = ('require ["variables", "fileinto"]; set "a" "juMBlEd lETteRS";\n'
              f'set {modifiers} "b" "${{a}}"; fileinto "${{b}}";')
    assert folders(sieve(script, mail("From: a@b\n\nx\n"))) == [value]


def test_rfc5229_quotewildcard_and_same_precedence_conflict():
    script = 'require ["variables", "fileinto"]; set :quotewildcard "b" "Rock*"; fileinto "${b}";'
    assert folders(sieve(script, mail("From: a@b\n\nx\n"))) == ["Rock\\*"]
    with pytest.raises(SieveError, match="cannot be used together"):
        compile_script('require "variables"; set :lower :upper "b" "x";')


def test_rfc5229_vacation_text_example():
    script = """require ["variables", "vacation"];
    set "honorific"  "Mr";
    set "first_name" "Wile";
    set "last_name"  "Coyote";
    set "vacation" text:
Dear ${HONORIFIC} ${last_name},
I'm out, please leave a message after the meep.
.
;
    vacation "${vacation}";"""
    (vac,) = sieve(script, message("rfc-a.eml")).of(Vacation)
    assert vac.text == "Dear Mr Coyote,\r\nI'm out, please leave a message after the meep.\r\n"


def test_rfc5229_string_test_example():
    script = ('require "variables"; set "state" "${state} pending";\n'
              'if string :matches " ${state} " "* pending *" { discard; }')
    assert not sieve(script, mail("From: a@b\n\nx\n")).implicit_keep


def test_rfc5229_match_variables_cannot_be_set_and_high_indexes_are_errors():
    for bad in ('set "1" "x";', 'set "a" "${10}";', 'set "a.b" "x";', 'set "${a}" "x";'):
        with pytest.raises(SieveError):
            compile_script(f'require "variables"; {bad}')


def test_rfc5229_long_values_are_cut_not_errors():
    script = 'require ["variables", "fileinto"]; set "a" "${1}"; if header :matches "subject" "*" ' \
             '{ set "v" "${1}"; set :length "n" "${v}"; fileinto "${n}"; }'
    result = sieve(script, mail("Subject: " + "x" * 5000 + "\n\nx\n"))
    assert result.error is None and folders(result) == ["4096"]


# -- RFC 5230 vacation / RFC 6131 vacation-seconds ------------------------------------------------------------

def test_rfc5230_two_different_responses_are_both_sent():
    script = """require "vacation";
    if header :contains "subject" "cyrus" {
        vacation "I'm out -- send mail to cyrus-bugs";
    } else {
        vacation "I'm out -- call me at +1 304 555 0123";
    }"""
    state = MemoryState()
    m1 = mail("From: coyote@desert.example.org\nTo: roadrunner@acme.example.com\nSubject: Cyrus bug\n\nx\n")
    m2 = mail("From: coyote@desert.example.org\nTo: roadrunner@acme.example.com\nSubject: come over for dinner\n\nx\n")
    for msg in (m1, m2):
        (vac,) = sieve(script, msg, state=state).of(Vacation)
        assert vac.reply is not None
        state.record([vac.track], NOW)


def test_rfc5230_tracking_ignores_variable_expansion():
    script = """require ["vacation", "variables"];
    if header :matches "subject" "*" {
        vacation :subject "Automatic response to: ${1}" "I'm away -- send mail to foo in my absence";
    }"""
    state = MemoryState()
    first = sieve(script, mail("From: a@example.org\nTo: roadrunner@acme.example.com\nSubject: one\n\nx\n"),
                  sender="a@example.org", state=state)
    (vac,) = first.of(Vacation)
    assert vac.reply is not None and b"Subject: Automatic response to: one" in vac.reply.data
    state.record([vac.track], NOW)
    second = sieve(script, mail("From: a@example.org\nTo: roadrunner@acme.example.com\nSubject: two\n\nx\n"),
                   sender="a@example.org", state=state)
    assert second.of(Vacation)[0].reply is None and second.of(Vacation)[0].reason == "AlreadyReplied"


def test_rfc5230_handle_makes_two_responses_one():
    script = """require "vacation";
    if header :contains "subject" "lunch" {
        vacation :handle "ran-away" "I'm out and can't meet for lunch";
    } else {
        vacation :handle "ran-away" "I'm out";
    }"""
    state = MemoryState()
    m1 = mail("From: tweety@cage.example.org\nTo: spike@doghouse.example.com\nSubject: lunch?\n\nx\n")
    m2 = mail("From: tweety@cage.example.org\nTo: spike@doghouse.example.com\nSubject: dinner?\n\nx\n")
    kw = dict(sender="tweety@cage.example.org", recipient="spike@doghouse.example.com", state=state)
    (v1,) = sieve(script, m1, **kw).of(Vacation)
    state.record([v1.track], NOW)
    (v2,) = sieve(script, m2, **kw).of(Vacation)
    assert v1.reply is not None and v2.reply is None


def test_rfc5230_days_and_addresses_example():
    script = """require "vacation";
    vacation :days 23 :addresses ["tjs@example.edu", "ts4z@landru.example.edu"]
    "I'm away until October 19.
If it's an emergency, call 911, I guess." ;"""
    msg = mail("From: a@example.org\nTo: ts4z@landru.example.edu\nSubject: hi\n\nx\n")
    result = sieve(script, msg, sender="a@example.org", recipient="tjs@example.edu")
    (vac,) = result.of(Vacation)
    assert vac.reply is not None and vac.period == 23 * 86400 and vac.track.expires == NOW + 23 * 86400
    assert result.implicit_keep  # vacation does not cancel the implicit keep


def test_rfc5230_vacation_with_redirect_example():
    script = """require "vacation";
    if header :contains "from" "boss@example.edu" { redirect "pleeb@isp.example.org"; }
    else { vacation "Sorry, I'm away, I'll read your\nmessage when I get around to it."; }"""
    assert sieve(script, mail("From: boss@example.edu\n\nx\n")).actions == (Redirect("pleeb@isp.example.org"),)


def test_rfc5230_only_one_vacation_per_script(msg_a):
    result = sieve('require "vacation"; vacation "a"; vacation :handle "x" "b";', msg_a)
    assert result.error is not None and result.actions == (Keep(implicit=True),)


def test_rfc6131_seconds_examples():
    script = """require ["vacation-seconds"];
    vacation :addresses ["tjs@example.edu", "ts4z@landru.example.edu"] :seconds 1800
             "I am in a meeting, and do not have access to email.";"""
    msg = mail("From: a@example.org\nTo: tjs@example.edu\n\nx\n")
    (vac,) = sieve(script, msg, sender="a@example.org").of(Vacation)
    assert vac.period == 1800 and vac.reply is not None
    every = 'require ["vacation-seconds"]; vacation :handle "auto-resp" :seconds 0 "Your request has been received.";'
    state = MemoryState()
    for _ in range(3):
        (vac,) = sieve(every, mail("From: a@example.org\nTo: roadrunner@acme.example.com\n\nx\n"),
                       sender="a@example.org", state=state).of(Vacation)
        assert vac.reply is not None and vac.track is None


def test_rfc6131_days_and_seconds_together_is_an_error():
    with pytest.raises(SieveError, match="cannot be used together"):
        compile_script('require "vacation-seconds"; vacation :days 1 :seconds 60 "x";')


# -- RFC 5231 relational --------------------------------------------------------------------------------------

RELATIONAL_MSG = mail("received: a\nreceived: b\nsubject: example\nto: foo@example.com, baz@example.com\n"
                      "cc: qux@example.com\n\nx\n")


@pytest.mark.parametrize("test,expected", [
    ('address :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] ["3"]', True),
    ('anyof (address :count "ge" :comparator "i;ascii-numeric" ["to"] ["3"], '
     'address :count "ge" :comparator "i;ascii-numeric" ["cc"] ["3"])', False),
    ('header :count "ge" :comparator "i;ascii-numeric" ["received"] ["3"]', False),
    ('header :count "ge" :comparator "i;ascii-numeric" ["received", "subject"] ["3"]', True),
    ('header :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] ["3"]', False),
])
def test_rfc5231_count_examples(test, expected):
    script = f'require ["relational", "comparator-i;ascii-numeric"]; if {test} {{ discard; }}'
    assert (not sieve(script, RELATIONAL_MSG).implicit_keep) == expected


def test_rfc5231_extended_example():
    script = """require ["relational", "comparator-i;ascii-numeric", "fileinto"];
    if header :value "lt" :comparator "i;ascii-numeric" ["x-priority"] ["3"] { fileinto "Priority"; }
    elsif address :count "gt" :comparator "i;ascii-numeric" ["to"] ["5"] { fileinto "SPAM"; }
    elsif address :value "gt" :all :comparator "i;ascii-casemap" ["from"] ["M"] { fileinto "From N-Z"; }
    else { fileinto "From A-M"; }
    if allof ( address :count "eq" :comparator "i;ascii-numeric" ["to", "cc"] ["1"] ,
               address :all :comparator "i;ascii-casemap" ["to", "cc"] ["me@foo.example.com"] )
    { fileinto "Only me"; }"""
    assert folders(sieve(script, mail("X-Priority: 1\nFrom: zed@x\n\nx\n"))) == ["Priority"]
    six = ", ".join(f"u{i}@x" for i in range(6))
    assert folders(sieve(script, mail(f"To: {six}\nFrom: zed@x\n\nx\n"))) == ["SPAM"]
    assert folders(sieve(script, mail("From: zed@x\nTo: me@foo.example.com\n\nx\n"))) == ["From N-Z", "Only me"]
    assert folders(sieve(script, mail("From: alice@x\n\nx\n"))) == ["From A-M"]


def test_rfc5231_ascii_numeric_treats_non_numbers_as_infinity():
    script = ('require ["relational", "comparator-i;ascii-numeric"];\n'
              'if header :value "gt" :comparator "i;ascii-numeric" "subject" "99999999999" { discard; }')
    assert not sieve(script, mail("Subject: none\n\nx\n")).implicit_keep
    assert sieve(script, mail("Subject: 12\n\nx\n")).implicit_keep


def test_rfc5231_numeric_comparator_must_be_required_and_cannot_do_substrings():
    with pytest.raises(SieveError, match="must be required"):
        compile_script('if header :is :comparator "i;ascii-numeric" "x" "1" { stop; }')
    with pytest.raises(SieveError, match="cannot be used with ':contains'"):
        compile_script('require "comparator-i;ascii-numeric";\n'
                       'if header :contains :comparator "i;ascii-numeric" "x" "1" { stop; }')


# -- RFC 5233 subaddress ------------------------------------------------------------------------------------------

SUBADDRESS = """require ["envelope", "subaddress", "fileinto"];
if envelope :user "to" "postmaster" { fileinto "inbox.postmaster"; stop; }
if envelope :detail "to" "mta-filters" { fileinto "inbox.ietf-mta-filters"; }
if envelope :detail "to" "foo" { redirect "ken@example.net"; }"""


@pytest.mark.parametrize("rcpt,expected", [
    ("postmaster@example.com", [FileInto("inbox.postmaster")]),
    ("postmaster+x@example.com", [FileInto("inbox.postmaster")]),
    ("ken+mta-filters@example.com", [FileInto("inbox.ietf-mta-filters")]),
    ("ken+foo@example.com", [Redirect("ken@example.net")]),
    ("ken@example.com", [Keep(implicit=True)]),
])
def test_rfc5233_example(rcpt, expected):
    assert list(sieve(SUBADDRESS, mail("From: a@b\n\nx\n"), recipient=rcpt).actions) == expected


def test_rfc5233_no_detail_never_matches_and_empty_detail_is_empty():
    script = 'require ["envelope", "subaddress"]; if envelope :detail "to" "" { discard; }'
    assert sieve(script, mail("From: a@b\n\nx\n"), recipient="ken@example.com").implicit_keep
    assert not sieve(script, mail("From: a@b\n\nx\n"), recipient="ken+@example.com").implicit_keep
    script = 'require ["envelope", "subaddress"]; if envelope :user "to" "ken" { discard; }'
    assert not sieve(script, mail("From: a@b\n\nx\n"), recipient="ken@example.com").implicit_keep


def test_rfc5233_delimiter_comes_from_the_context():
    script = 'require ["envelope", "subaddress"]; if envelope :detail "to" "news" { discard; }'
    msg = mail("From: a@b\n\nx\n")
    assert not sieve(script, msg, recipient="ana-news@example.com", recipient_delimiter="-").implicit_keep
    assert sieve(script, msg, recipient="ana-news@example.com").implicit_keep


# -- RFC 5260 date and index ---------------------------------------------------------------------------------------

def test_rfc5260_business_hours_example():
    script = """require ["date", "relational", "fileinto"];
    if allof(header :is "from" "boss@example.com",
             date :value "ge" :originalzone "date" "hour" "09",
             date :value "lt" :originalzone "date" "hour" "17")
    { fileinto "urgent"; }"""
    at = "From: boss@example.com\nDate: Tue, 1 Apr 1997 {} -0800\n\nx\n"
    assert folders(sieve(script, mail(at.format("09:06:31")))) == ["urgent"]
    assert folders(sieve(script, mail(at.format("17:00:00")))) == []


def test_rfc5260_weekend_example_uses_the_received_field():
    script = """require ["date", "relational", "fileinto"];
    if anyof(date :is "received" "weekday" "0", date :is "received" "weekday" "6") { fileinto "weekend"; }"""
    sat = mail("Received: from a by b; Sat, 5 Apr 1997 06:00:00 +0000\n\nx\n")
    mon = mail("Received: from a by b; Mon, 7 Apr 1997 06:00:00 +0000\n\nx\n")
    assert folders(sieve(script, sat)) == ["weekend"] and folders(sieve(script, mon)) == []


def test_rfc5260_currentdate_examples():
    pager = """require ["date", "relational"];
    if anyof(currentdate :is "weekday" "0", currentdate :is "weekday" "6",
             currentdate :value "lt" "hour" "09", currentdate :value "ge" "hour" "17")
    { redirect "pager@example.com"; }"""
    msg = mail("From: a@b\n\nx\n")
    assert sieve(pager, msg).implicit_keep  # NOW is a Monday, 10:30 UTC
    assert sieve(pager, msg, now=NOW + 8 * 3600).of(Redirect) == [Redirect("pager@example.com")]
    folder = """require ["date", "variables", "fileinto"];
    if currentdate :matches "month" "*" { set "month" "${1}"; }
    if currentdate :matches "year"  "*" { set "year"  "${1}"; }
    fileinto "${month}-${year}";"""
    assert folders(sieve(folder, msg)) == ["03-2024"]
    vacation = """require ["date", "relational", "vacation"];
    if allof(currentdate :value "ge" "date" "2024-03-01", currentdate :value "le" "date" "2024-03-07")
    { vacation :days 7 "I'm away during the first week in March."; }"""
    assert sieve(vacation, msg).of(Vacation)
    assert not sieve(vacation, msg, now=NOW + 10 * 86400).of(Vacation)


@pytest.mark.parametrize("part,value", [
    ("year", "1997"), ("month", "04"), ("day", "01"), ("date", "1997-04-01"), ("julian", "50539"),
    ("hour", "09"), ("minute", "06"), ("second", "31"), ("time", "09:06:31"),
    ("iso8601", "1997-04-01T09:06:31-08:00"), ("std11", "Tue, 01 Apr 1997 09:06:31 -0800"),
    ("zone", "-0800"), ("weekday", "2"),
])
def test_rfc5260_date_parts(part, value):
    script = f'require "date"; if date :originalzone :is "date" "{part}" "{value}" {{ discard; }}'
    assert not sieve(script, message("rfc-a.eml")).implicit_keep


def test_rfc5260_zone_shifts_and_zulu_is_written_z():
    msg = message("rfc-a.eml")
    assert not sieve('require "date"; if date :zone "+0000" "date" "iso8601" "1997-04-01T17:06:31Z" '
                     '{ discard; }', msg).implicit_keep
    assert not sieve('require "date"; if date :zone "+0000" "date" "zone" "+0000" { discard; }', msg).implicit_keep
    assert not sieve('require "date"; if date "date" "hour" "17" { discard; }', msg).implicit_keep  # local = UTC


def test_rfc5260_invalid_dates_never_match():
    for value in ("Tue, 32 Jan 1997 10:00:00 +0000", "Sat, 29 Feb 1997 10:00:00 +0000", "no date"):
        msg = mail(f"Date: {value}\n\nx\n")
        assert sieve('require "date"; if date :matches "date" "year" "*" { discard; }', msg).implicit_keep


def test_rfc5260_index_example():
    script = """require ["date", "relational", "index"];
    if date :value "gt" :index 2 :zone "-0500" "received" "iso8601" "2007-02-26T09:00:00-05:00"
    { redirect "aftercutoff@example.org"; }"""
    msg = mail("Received: from a by b; Tue, 27 Feb 2007 10:00:00 -0500\n"
               "Received: from c by a; {} -0500\n\nx\n")
    assert sieve(script, msg.replace(b"{}", b"Mon, 26 Feb 2007 08:00:00")).implicit_keep
    assert sieve(script, msg.replace(b"{}", b"Mon, 26 Feb 2007 10:00:00")).of(Redirect)


def test_rfc5260_index_counts_fields_across_names_and_last_without_index_is_an_error():
    msg = mail("X-A: one\nX-B: two\nX-A: three\n\nx\n")
    assert not sieve('require "index"; if header :index 2 :is ["x-a", "x-b"] "three" { discard; }',
                     msg).implicit_keep
    assert not sieve('require "index"; if header :index 1 :last :is "x-a" "three" { discard; }', msg).implicit_keep
    with pytest.raises(SieveError, match=":last"):
        compile_script('require "index"; if header :last :is "x-a" "x" { stop; }')


# -- RFC 5490 mailbox ---------------------------------------------------------------------------------------------

def test_rfc5490_mailboxexists_example():
    script = """require ["fileinto", "reject", "mailbox"];
    if mailboxexists "Partners" { fileinto "Partners"; } else { reject "This message was not accepted by the Mailstore"; }"""
    msg = mail("From: a@b\n\nx\n")
    assert folders(sieve(script, msg, folder_exists=lambda n: n == "Partners")) == ["Partners"]
    assert sieve(script, msg, folder_exists=lambda n: False).of(Reject)


def test_rfc5490_create():
    result = sieve('require ["fileinto", "mailbox"]; fileinto :create "Trash/Duplicate";', mail("From: a@b\n\nx\n"))
    assert result.actions == (FileInto("Trash/Duplicate", create=True),)


# -- RFC 5235 spamtest and virustest --------------------------------------------------------------------------------

SPAMTEST = """require ["spamtest", "fileinto", "relational", "comparator-i;ascii-numeric"];
if spamtest :value "eq" :comparator "i;ascii-numeric" "0" { fileinto "INBOX.unclassified"; }
elsif spamtest :value "ge" :comparator "i;ascii-numeric" "3" { fileinto "INBOX.spam-trap"; }"""


@pytest.mark.parametrize("verdict,expected", [
    (None, ["INBOX.unclassified"]), (ScanVerdict(spam_score=0.0), []), (ScanVerdict(spam_score=-3.0), []),
    (ScanVerdict(spam_score=2.0, spam_max=15), []), (ScanVerdict(spam_score=5.0, spam_max=15), ["INBOX.spam-trap"]),
    (ScanVerdict(spam_score=99.0, spam_max=15), ["INBOX.spam-trap"]),
])
def test_rfc5235_spamtest_example(verdict, expected):
    assert folders(sieve(SPAMTEST, mail("From: a@b\n\nx\n"), verdict=verdict)) == expected


def test_rfc5235_spamtestplus_example_and_count():
    script = """require ["spamtestplus", "fileinto", "relational", "comparator-i;ascii-numeric"];
    if spamtest :percent :count "eq" :comparator "i;ascii-numeric" "0" { fileinto "INBOX.unclassified"; }
    elsif spamtest :percent :value "eq" :comparator "i;ascii-numeric" "0" { fileinto "INBOX.not-spam"; }
    elsif spamtest :percent :value "lt" :comparator "i;ascii-numeric" "37" { fileinto "INBOX.spam-trap"; }
    else { discard; }"""
    msg = mail("From: a@b\n\nx\n")
    assert folders(sieve(script, msg)) == ["INBOX.unclassified"]
    assert folders(sieve(script, msg, verdict=ScanVerdict(spam_score=0))) == ["INBOX.not-spam"]
    assert folders(sieve(script, msg, verdict=ScanVerdict(spam_score=5, spam_max=15))) == ["INBOX.spam-trap"]
    assert sieve(script, msg, verdict=ScanVerdict(spam_score=10, spam_max=15)).actions == (Discard(),)
    with pytest.raises(SieveError, match="spamtestplus"):
        compile_script('require "spamtest"; if spamtest :percent "1" { stop; }')


@pytest.mark.parametrize("level,expected", [
    (None, ["INBOX.unclassified"]), (1, []), (4, ["INBOX.quarantine"]), (5, "discard")])
def test_rfc5235_virustest_example(level, expected):
    script = """require ["virustest", "fileinto", "relational", "comparator-i;ascii-numeric"];
    if virustest :value "eq" :comparator "i;ascii-numeric" "0" { fileinto "INBOX.unclassified"; }
    if virustest :value "eq" :comparator "i;ascii-numeric" "4" { fileinto "INBOX.quarantine"; }
    elsif virustest :value "eq" :comparator "i;ascii-numeric" "5" { discard; }"""
    result = sieve(script, mail("From: a@b\n\nx\n"), verdict=ScanVerdict(virus_level=level))
    assert (result.actions == (Discard(),)) if expected == "discard" else folders(result) == expected


# -- RFC 6609 include -----------------------------------------------------------------------------------------------

RFC6609 = {
    ("personal", "always_allow"): 'if address :is "from" "boss@example.com" { keep; }\n'
                                  'elsif address :is "from" "ceo@example.com" { keep; }',
    ("personal", "spam_tests"): 'require ["reject"];\nif header :contains "Subject" "XXXX" '
                                '{ reject "Subject XXXX is unacceptable."; }\n'
                                'elsif address :is "from" "money@example.com" '
                                '{ reject "Mail from this sender is unwelcome."; }',
    ("personal", "mailing_lists"): 'require ["fileinto"];\nif header :is "List-ID" "sieve.ietf.org" '
                                   '{ fileinto "lists.sieve"; }\nelsif header :is "List-ID" "ietf-imapext.imc.org" '
                                   '{ fileinto "lists.imapext"; }',
    ("global", "spam_tests"): 'require ["reject"];\nif anyof (header :contains "Subject" "$$", '
                              'header :contains "Subject" "Make money") { reject "No thank you."; }',
    ("personal", "subject_tests"): 'require ["include", "variables"];\nglobal ["test", "test_mailbox"];\n'
                                   'if header :contains "Subject" "${test}" { set "test_mailbox" "spam-${test}"; }',
}
DEFAULT = """require ["include"];
include :personal "always_allow";
include :global "spam_tests";
include :personal "spam_tests";
include :personal "mailing_lists";"""


@pytest.mark.parametrize("headers,expected", [
    ("From: boss@example.com", [Keep()]),
    ("From: x@y\nSubject: Make money now", [Reject("No thank you.")]),
    ("From: x@y\nSubject: XXXX", [Reject("Subject XXXX is unacceptable.")]),
    ("From: money@example.com", [Reject("Mail from this sender is unwelcome.")]),
    ("From: x@y\nList-ID: sieve.ietf.org", [FileInto("lists.sieve")]),
    ("From: x@y", [Keep(implicit=True)]),
])
def test_rfc6609_default_script_example(headers, expected):
    result = sieve(DEFAULT, mail(headers + "\n\nx\n"), includes=DictIncludes(RFC6609))
    assert list(result.actions) == expected


def test_rfc6609_keep_in_one_script_then_reject_in_another_is_a_conflict():
    result = sieve(DEFAULT, mail("From: boss@example.com\nSubject: XXXX\n\nx\n"), includes=DictIncludes(RFC6609))
    assert result.error is not None and result.actions == (Keep(implicit=True),)


def test_rfc6609_global_variables_example():
    script = """require ["fileinto", "include", "variables", "relational"];
    global "test";
    global "test_mailbox";
    set "test" "$$";
    include "subject_tests";
    set "test" "Make money";
    include "subject_tests";
    if string :count "eq" "${test_mailbox}" "1" { fileinto "${test_mailbox}"; stop; }"""
    inc = DictIncludes(RFC6609)
    assert folders(sieve(script, mail("Subject: $$ and more\n\nx\n"), includes=inc)) == ["spam-$$"]
    assert folders(sieve(script, mail("Subject: Make money fast\n\nx\n"), includes=inc)) == ["spam-Make money"]
    assert sieve(script, mail("Subject: hello\n\nx\n"), includes=inc).implicit_keep


def test_rfc6609_global_namespace_is_the_same_variable():
    script = """require ["variables", "include", "vacation"];
    global "i_am_on_vacation";
    set "global.i_am_on_vacation" "1";
    if string :is "${i_am_on_vacation}" "1" { vacation "It's true, I am on vacation."; }"""
    assert sieve(script, message("rfc-a.eml")).of(Vacation)


def test_rfc6609_recursion_is_an_error_at_run_time_and_once_skips_it():
    loop = {("personal", "a"): 'require "include"; include "b";', ("personal", "b"): 'require "include"; include "a";'}
    result = sieve('require "include"; include "a";', mail("From: x@y\n\nz\n"), includes=DictIncludes(loop))
    assert result.error is not None and "loop" in str(result.error)
    once = {("personal", "a"): 'require ["include", "fileinto"]; include :once "b"; fileinto "a";',
            ("personal", "b"): 'require ["include", "fileinto"]; include :once "a"; fileinto "b";'}
    result = sieve('require "include"; include :once "a";', mail("From: x@y\n\nz\n"), includes=DictIncludes(once))
    assert result.error is None and [a.folder for a in result.of(FileInto)] == ["b", "a"]


def test_rfc6609_optional_missing_script_and_return():
    scripts = {("personal", "r"): 'require ["include", "fileinto"]; fileinto "one"; return; fileinto "never";'}
    script = 'require ["include", "fileinto"]; include :optional "missing"; include "r"; fileinto "after";'
    assert folders(sieve(script, mail("From: x@y\n\nz\n"), includes=DictIncludes(scripts))) == ["one", "after"]
    result = sieve('require "include"; include "missing";', mail("From: x@y\n\nz\n"), includes=DictIncludes({}))
    assert result.error is not None and "does not exist" in str(result.error)


def test_rfc6609_stop_in_an_included_script_stops_everything():
    scripts = {("personal", "s"): "stop;"}
    script = 'require ["include", "fileinto"]; include "s"; fileinto "never";'
    assert sieve(script, mail("From: x@y\n\nz\n"), includes=DictIncludes(scripts)).actions == (Keep(implicit=True),)


def test_rfc6609_requires_do_not_pass_to_included_scripts():
    with pytest.raises(SieveError):
        compile_script('fileinto "x";')  # what an included script would need to require itself
    with pytest.raises(SieveError, match="global"):
        compile_script('require "include"; global "x";')


# -- RFC 7352 duplicate ----------------------------------------------------------------------------------------------

def test_rfc7352_example_1_and_state_only_after_success():
    script = 'require ["duplicate", "fileinto", "mailbox"];\nif duplicate { fileinto :create "Trash/Duplicate"; }'
    state = MemoryState()
    msg = mail("Message-ID: <one@example.com>\n\nx\n")
    first = sieve(script, msg, state=state)
    assert first.implicit_keep and len(first.state_updates) == 1
    assert sieve(script, msg, state=state).implicit_keep  # nothing recorded yet: no false duplicate
    state.record(first.state_updates, NOW)
    assert folders(sieve(script, msg, state=state)) == ["Trash/Duplicate"]


def test_rfc7352_three_forms_track_the_same_id():
    forms = ['require "duplicate"; if duplicate { discard; }',
             'require "duplicate"; if duplicate :header "message-id" { discard; }',
             'require ["duplicate", "variables"]; if header :matches "message-id" "*" '
             '{ if duplicate :uniqueid "${0}" { discard; } }']
    msg = mail("Message-ID: <one@example.com>\n\nx\n")
    for recorder in forms:
        state = MemoryState()
        state.record(sieve(recorder, msg, state=state).state_updates, NOW)
        for checker in forms:
            assert not sieve(checker, msg, state=state).implicit_keep


def test_rfc7352_handles_separate_tracking_and_seconds_expire():
    state = MemoryState()
    msg = mail("X-Event-ID: 42\nX-Ticket-ID: 42\n\nx\n")
    notifier = 'require "duplicate"; if duplicate :header "X-Event-ID" :handle "notifier" { discard; }'
    support = 'require "duplicate"; if duplicate :header "X-Ticket-ID" :handle "support" { discard; }'
    state.record(sieve(notifier, msg, state=state).state_updates, NOW)
    assert not sieve(notifier, msg, state=state).implicit_keep
    assert sieve(support, msg, state=state).implicit_keep
    alerts = ('require ["duplicate", "variables", "imap4flags", "fileinto"];\n'
              'if header :matches "subject" "ALERT: *" { if duplicate :seconds 60 :uniqueid "${1}" '
              '{ setflag "\\\\seen"; } fileinto "Alerts"; }')
    alert = mail("Subject: ALERT: disk full\n\nx\n")
    state.record(sieve(alerts, alert, state=state).state_updates, NOW)
    assert stores(sieve(alerts, alert, state=state, now=NOW + 30)) == [("Alerts", ("\\Seen",))]
    assert stores(sieve(alerts, alert, state=state, now=NOW + 61)) == [("Alerts", ())]


def test_rfc7352_missing_header_seconds_zero_and_last():
    state = MemoryState()
    no_id = mail("Subject: x\n\ny\n")
    result = sieve('require "duplicate"; if duplicate { discard; }', no_id, state=state)
    assert result.implicit_keep and result.state_updates == ()
    msg = mail("Message-ID: <a@b>\n\nx\n")
    zero = sieve('require "duplicate"; if duplicate :seconds 0 { discard; }', msg, state=state)
    assert zero.implicit_keep and zero.state_updates == ()
    state.record(sieve('require "duplicate"; if duplicate :seconds 100 { discard; }', msg, state=state)
                 .state_updates, NOW)
    again = sieve('require "duplicate"; if duplicate :seconds 100 :last { discard; }', msg, state=state, now=NOW + 50)
    assert not again.implicit_keep and again.state_updates[0].expires == NOW + 150


def test_rfc7352_header_and_uniqueid_together_is_an_error():
    with pytest.raises(SieveError, match="cannot be used together"):
        compile_script('require "duplicate"; if duplicate :header "x" :uniqueid "y" { stop; }')
