"""LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE selection
(RFC 6154), APPENDLIMIT (RFC 7889) and STATUS=SIZE (RFC 8438): the RFCs'
examples against the running server, on RFC 5258's own folder tree."""
from __future__ import annotations

import pytest

from ext_messages import mail, ok
from imaptest_support import ALICE


@pytest.fixture
def fruit(imap, raw):
    """RFC 5258 section 5's mailboxes: Fruit/{Apple,Banana,Peach}, Tofu,
    Vegetable/{Broccoli,Corn}; subscribed: Fruit/Banana, Fruit/Peach (then
    deleted), Vegetable, Vegetable/Broccoli."""
    for name in ("Fruit", "Fruit/Apple", "Fruit/Banana", "Fruit/Peach", "Tofu", "Vegetable",
                 "Vegetable/Broccoli", "Vegetable/Corn"):
        ok(raw, f"CREATE {name}")
    for name in ("Fruit/Banana", "Fruit/Peach", "Vegetable", "Vegetable/Broccoli"):
        ok(raw, f"SUBSCRIBE {name}")
    ok(raw, "DELETE Fruit/Peach")
    return raw


def listed(lines: list[bytes]) -> dict[str, tuple[set[str], bytes]]:
    """name -> (attributes, extended data)."""
    out = {}
    for line in lines:
        assert line.startswith(b"* LIST ("), line
        attrs, rest = line[8:].split(b')', 1)
        name_part = rest.split(b'"/" ', 1)[1].rstrip(b"\r\n")
        name, _, extra = name_part[1:].partition(b'"')
        out[name.decode()] = ({a.decode() for a in attrs.split()}, extra.strip())
    return out


def test_list_return_children(fruit):
    """RFC 5258 5, example 1 (LIST "" % RETURN (CHILDREN))."""
    got = listed(ok(fruit, 'LIST "" "%" RETURN (CHILDREN)'))
    assert "\\HasChildren" in got["Fruit"][0] and "\\HasChildren" in got["Vegetable"][0]
    assert "\\HasNoChildren" in got["Tofu"][0]
    assert "Fruit/Apple" not in got


def test_list_subscribed(fruit):
    """RFC 5258 5, example 3: a subscribed name that no longer exists is
    listed \\NonExistent."""
    got = listed(ok(fruit, 'LIST (SUBSCRIBED) "" "*"'))
    assert {n for n in got if n not in ("INBOX", "Sent", "Drafts", "Trash", "Junk")} == {
        "Fruit/Banana", "Fruit/Peach", "Vegetable", "Vegetable/Broccoli"}
    assert got["Fruit/Peach"][0] == {"\\Subscribed", "\\NonExistent"}
    assert "\\Subscribed" in got["Vegetable"][0] and "\\NonExistent" not in got["Vegetable"][0]


def test_list_return_subscribed_lists_everything(fruit):
    """RFC 5258 5, example 4: RETURN (SUBSCRIBED) marks, it does not select."""
    got = listed(ok(fruit, 'LIST "" "*" RETURN (SUBSCRIBED)'))
    assert "\\Subscribed" in got["Fruit/Banana"][0] and "\\Subscribed" not in got["Fruit/Apple"][0]
    assert "Fruit/Peach" not in got  # deleted, and not selected by subscription here


def test_list_subscribed_recursivematch_childinfo(fruit):
    """RFC 5258 5, example 9: with RECURSIVEMATCH, "%" lists the parents of
    subscribed folders it does not reach, with CHILDINFO — Vegetable, which
    is subscribed itself, too."""
    got = listed(ok(fruit, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)'))
    assert got["Fruit"] == ({"\\HasChildren"}, b'("CHILDINFO" ("SUBSCRIBED"))')
    assert got["Vegetable"][1] == b'("CHILDINFO" ("SUBSCRIBED"))'
    assert "\\Subscribed" in got["Vegetable"][0]
    assert "Tofu" not in got
    got = listed(ok(fruit, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "*"'))
    assert not [n for n, (_, extra) in got.items() if extra]  # "*" reaches every subscribed folder


def test_list_several_patterns(fruit):
    """RFC 5258 5, example 10: LIST "" ("INBOX" "Vegetable/%")."""
    got = listed(ok(fruit, 'LIST "" ("INBOX" "Vegetable/%")'))
    assert set(got) == {"INBOX", "Vegetable/Broccoli", "Vegetable/Corn"}


def test_list_extended_errors(fruit):
    assert fruit.cmd('LIST (RECURSIVEMATCH) "" "%"')[-1].startswith(b"t%d BAD " % fruit.n)
    assert fruit.cmd('LIST (FRUITY) "" "%"')[-1] == (
        b"t%d BAD Error in IMAP command LIST: Unknown LIST selection option FRUITY\r\n" % fruit.n)
    assert fruit.cmd('LIST "" "%" RETURN (COLOURS)')[-1] == (
        b"t%d BAD Error in IMAP command LIST: Unknown LIST return option COLOURS\r\n" % fruit.n)
    assert ok(fruit, 'LIST (REMOTE) "" Tofu') == [b'* LIST (\\HasNoChildren) "/" "Tofu"\r\n']


def test_list_special_use_selection(fruit):
    """RFC 6154 5.1: LIST (SPECIAL-USE) lists only special folders."""
    assert set(listed(ok(fruit, 'LIST (SPECIAL-USE) "" "*"'))) == {"Sent", "Drafts", "Trash", "Junk"}
    got = listed(ok(fruit, 'LIST "" "%" RETURN (SPECIAL-USE)'))
    assert "\\Sent" in got["Sent"][0] and got["Tofu"][0] == {"\\HasNoChildren"}


def test_list_status(imap, fruit):
    """RFC 5819's example: LIST "" % RETURN (STATUS (MESSAGES UNSEEN)) —
    a STATUS after each selectable folder, none after a parent only."""
    for i in range(3):
        imap.deliver(ALICE, mail(f"m{i}"))
    ok(fruit, "CREATE bar/baz")
    ok(fruit, "DELETE bar")  # "bar" is only a parent now
    lines = ok(fruit, 'LIST "" "%" RETURN (STATUS (MESSAGES UNSEEN))')
    i = lines.index(b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n')
    assert lines[i + 1] == b'* STATUS "INBOX" (MESSAGES 3 UNSEEN 3)\r\n'
    assert b'* LIST (\\NonExistent \\HasChildren) "/" "bar"\r\n' in lines
    assert not [ln for ln in lines if ln.startswith(b'* STATUS "bar"')]
    k = lines.index(b'* LIST (\\HasNoChildren) "/" "Tofu"\r\n')
    assert lines[k + 1] == b'* STATUS "Tofu" (MESSAGES 0 UNSEEN 0)\r\n'
    assert b"LIST-STATUS" in ok(fruit, "CAPABILITY")[0]


def test_status_size_and_appendlimit(imap, raw):
    """RFC 8438's SIZE and RFC 7889's APPENDLIMIT as STATUS items (and in LIST-STATUS)."""
    sizes = [len(mail(f"m{i}", body="x" * (100 * i))) for i in range(3)]
    for i in range(3):
        imap.deliver(ALICE, mail(f"m{i}", body="x" * (100 * i)))
    limit = imap.config.mailstore.max_literal_bytes
    caps = ok(raw, "CAPABILITY")[0]
    assert b" STATUS=SIZE" in caps and b" APPENDLIMIT=%d" % limit in caps
    assert ok(raw, "STATUS INBOX (MESSAGES SIZE APPENDLIMIT)") == [
        b'* STATUS "INBOX" (MESSAGES 3 SIZE %d APPENDLIMIT %d)\r\n' % (sum(sizes), limit)]
    assert b'* STATUS "INBOX" (SIZE %d)\r\n' % sum(sizes) in ok(raw, 'LIST "" INBOX RETURN (STATUS (SIZE))')
    raw.send(b"big APPEND INBOX {%d}\r\n" % (limit + 1))
    assert raw.readline() == b"big NO [TOOBIG] Literal too large (the limit is %d octets).\r\n" % limit
