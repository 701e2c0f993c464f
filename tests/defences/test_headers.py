"""The header section as raw fields: the author's domains, removal that
leaves everything else byte for byte."""
from __future__ import annotations

from correo_server.mailauth import headers


def test_author_domains_of_a_normal_message():
    msg = b"From: \"Alice, Sales\" <Alice@Sender.Example>\r\nTo: b@example.com\r\n\r\nbody"
    assert headers.author_domains(msg) == (["sender.example"], "")


def test_author_domains_say_what_is_wrong():
    assert headers.author_domains(b"To: b@example.com\r\n\r\n")[1] == "no From header field"
    two = b"From: a@one.example\r\nFrom: b@two.example\r\n\r\n"
    assert headers.author_domains(two) == (["one.example", "two.example"], "2 From header fields")
    assert "no domain" in headers.author_domains(b"From: alice\r\n\r\n")[1]


def test_removal_keeps_every_other_byte():
    msg = (b"Received: from x\r\n\tby y\r\nX-Spam-Flag: YES\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n"
           b"\r\nX-Spam-Flag: body text, not a header\r\n")
    out, dropped = headers.remove(msg, lambda f: f.lname == "x-spam-flag")
    assert [f.name for f in dropped] == ["X-Spam-Flag"]
    assert out == msg.replace(b"X-Spam-Flag: YES\r\n", b"", 1)
    same, none = headers.remove(msg, lambda f: False)
    assert same is msg and none == []


def test_folded_values_are_unfolded():
    msg = b"Subject: a\r\n  long\r\n\tsubject\r\n\r\n"
    assert headers.values(msg, "subject") == ["a  long\tsubject"]


def test_the_same_header_section_with_another_body_splits_alike():
    """The checks of one message share one split of its header section;
    a message with the same fields but another body gets its own rest."""
    head = b"From: a@one.example\r\nSubject: hi\r\n\tthere\r\n\r\n"
    first = headers.split(head + b"first body\r\n")
    second = headers.split(head + b"second body\r\n")
    assert [f.raw for f in first[0]] == [f.raw for f in second[0]] == [b"From: a@one.example\r\n",
                                                                       b"Subject: hi\r\n\tthere\r\n"]
    assert (first[1], second[1]) == (b"\r\nfirst body\r\n", b"\r\nsecond body\r\n")
    first[0].clear()  # a caller changing its list changes nobody else's
    assert len(headers.split(head + b"x")[0]) == 2
    other = headers.split(b"From: b@two.example\r\n\r\nbody")
    assert [f.value for f in other[0]] == ["b@two.example"] and other[1] == b"\r\nbody"
    lenient = headers.split(b"From: c@three.example\r\nnot a field\r\n\r\nbody")
    assert [f.lname for f in lenient[0]] == ["from"] and lenient[1] == b"not a field\r\n\r\nbody"
