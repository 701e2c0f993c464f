"""Folders over IMAP: LIST (with CHILDREN, SPECIAL-USE, LIST-EXTENDED,
LIST-STATUS), LSUB, CREATE, DELETE, RENAME (INBOX too), SUBSCRIBE, STATUS,
SELECT/EXAMINE responses, QUOTA."""
from __future__ import annotations

import re

from imaptest_messages import SIMPLE
from imaptest_support import ALICE


def names(lines: list[bytes]) -> dict[str, bytes]:
    """LIST/LSUB lines → {name: attributes}."""
    out = {}
    for line in lines[:-1]:
        m = re.match(rb'\* (?:LIST|LSUB) \(([^)]*)\) "/" "((?:[^"\\]|\\.)*)"', line)
        if m:
            out[m.group(2).decode()] = m.group(1)
    return out


def test_new_mailbox_lists_inbox_and_special_folders(raw):
    lines = raw.cmd('LIST "" "*"')
    assert lines[:-1] == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n',
        b'* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"\r\n',
        b'* LIST (\\HasNoChildren \\Junk) "/" "Junk"\r\n',
        b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"\r\n',
        b'* LIST (\\HasNoChildren \\Trash) "/" "Trash"\r\n',
    ]
    assert raw.cmd('LIST "" ""')[0] == b'* LIST (\\Noselect) "/" ""\r\n'
    assert names(raw.cmd('LSUB "" "*"')).keys() == {"INBOX", "Drafts", "Junk", "Sent", "Trash"}


def test_create_hierarchy_and_wildcards(raw):
    assert raw.cmd("CREATE Work/2024/Q1")[-1].split()[1] == b"OK"
    assert raw.cmd("CREATE Projects/")[-1].split()[1] == b"OK"  # trailing delimiter: intent to have children
    assert b"[ALREADYEXISTS]" in raw.cmd("CREATE Work")[-1]
    assert b"[ALREADYEXISTS]" in raw.cmd("CREATE inbox")[-1]
    listed = names(raw.cmd('LIST "" "*"'))
    assert listed["Work"] == b"\\HasChildren" and listed["Work/2024/Q1"] == b"\\HasNoChildren"
    assert "Projects" in listed
    assert list(names(raw.cmd('LIST "" "%"'))) == ["INBOX", "Drafts", "Junk", "Projects", "Sent", "Trash", "Work"]
    assert list(names(raw.cmd('LIST "Work/" "%"'))) == ["Work/2024"]
    assert list(names(raw.cmd('LIST "" "Work/*"'))) == ["Work/2024", "Work/2024/Q1"]
    assert list(names(raw.cmd('LIST "" "inBOX"'))) == ["INBOX"]


def test_non_ascii_names_travel_as_modified_utf7(raw):
    assert raw.cmd('CREATE "Entw&APw-rfe"')[-1].split()[1] == b"OK"
    assert "Entw&APw-rfe" in names(raw.cmd('LIST "" "*"'))
    assert raw.cmd('CREATE "bad&name"')[-1].split()[1] == b"NO"
    assert raw.cmd('SELECT "Entw&APw-rfe"')[-1].split()[1] == b"OK"


NOT_MUTF7 = b"NO [CANNOT] Mailbox name is not valid modified UTF-7\r\n"
INVALID_NAMES = [
    "Café".encode(),  # raw UTF-8: what mbsync 1.4 sends for a local folder "Café"
    b"Caf\xe9",       # raw Latin-1
    b"x&AOk",         # unterminated & sequence
    b"&AGE-",         # printable ASCII ("a") must not be encoded
    b"&Jjo!",         # not modified base64
]


def test_names_that_are_not_modified_utf7_are_refused(imap, raw):
    """RFC 3501 5.1.3: mailbox names are 7-bit modified UTF-7.  A name that
    is not is refused (as Dovecot does without UTF8=ACCEPT), never converted
    behind the client's back; the session goes on."""
    imap.deliver(ALICE, SIMPLE)
    raw.cmd("CREATE Valid")
    for bad in INVALID_NAMES:
        q = b'"' + bad + b'"'
        for command in (b"CREATE " + q, b"RENAME Valid " + q, b"RENAME " + q + b" Other", b"SELECT " + q,
                        b"EXAMINE " + q, b"STATUS " + q + b" (MESSAGES)", b"SUBSCRIBE " + q,
                        b"UNSUBSCRIBE " + q, b"DELETE " + q, b"GETQUOTAROOT " + q,
                        b"APPEND " + q + b" {5+}\r\nhello", b"CREATE {%d+}\r\n" % len(bad) + bad):
            lines = raw.cmd(command)
            assert lines[-1].split(b" ", 1)[1] == NOT_MUTF7, (command, lines)
    raw.cmd("SELECT INBOX")
    for bad in INVALID_NAMES:
        for verb in (b"COPY", b"MOVE", b"UID COPY", b"UID MOVE"):
            assert raw.cmd(verb + b' 1 "' + bad + b'"')[-1].split(b" ", 1)[1] == NOT_MUTF7
    assert len(imap.folder(ALICE)) == 1  # nothing moved
    # a refused SELECT leaves no folder selected, like any failed SELECT
    assert raw.cmd(b'SELECT "Caf\xc3\xa9"')[-1].split(b" ", 1)[1] == NOT_MUTF7
    assert raw.cmd("FETCH 1 FLAGS")[-1].split()[1] == b"BAD"
    listed = names(raw.cmd('LIST "" "*"'))
    assert set(listed) == {"INBOX", "Drafts", "Junk", "Sent", "Trash", "Valid"}
    assert "Valid" not in names(raw.cmd('LSUB "" "*"'))
    assert raw.cmd("SELECT INBOX")[-1].split()[1] == b"OK"


def test_valid_modified_utf7_names_round_trip(raw):
    assert raw.cmd('CREATE "Caf&AOk-"')[-1].split()[1] == b"OK"
    assert raw.cmd('CREATE "Caf&AOk-/&ZeVnLIqe-"')[-1].split()[1] == b"OK"  # 日本語
    assert raw.cmd('CREATE "Tom &- Jerry"')[-1].split()[1] == b"OK"
    listed = names(raw.cmd('LIST "" "*"'))
    assert {"Caf&AOk-", "Caf&AOk-/&ZeVnLIqe-", "Tom &- Jerry"} <= set(listed)
    assert b'* STATUS "Caf&AOk-" (MESSAGES 0)\r\n' in raw.cmd('STATUS "Caf&AOk-" (MESSAGES)')
    assert raw.cmd(b'APPEND "Caf&AOk-" {5+}\r\nhello')[-1].split()[1] == b"OK"
    assert raw.cmd('RENAME "Caf&AOk-" "D&AOk-j&AOA- vu"')[-1].split()[1] == b"OK"
    assert b"* 1 EXISTS\r\n" in raw.cmd('SELECT "D&AOk-j&AOA- vu"')
    assert "D&AOk-j&AOA- vu/&ZeVnLIqe-" in names(raw.cmd('LIST "" "*"'))
    # a UTF-8 LIST pattern or reference is only a pattern: it matches the
    # encoded name (as in Dovecot), and the name comes back in mUTF-7
    assert list(names(raw.cmd(b'LIST "" "D\xc3\xa9j\xc3\xa0 vu"'))) == ["D&AOk-j&AOA- vu"]
    assert list(names(raw.cmd(b'LIST "D\xc3\xa9j\xc3\xa0 vu/" "%"'))) == ["D&AOk-j&AOA- vu/&ZeVnLIqe-"]


def test_imapclient_round_trips_unicode_folder_names(imap):
    import imapclient
    from imaptest_support import PASSWORD
    c = imapclient.IMAPClient("127.0.0.1", port=imap.port, ssl=False)
    c.login(ALICE, PASSWORD)
    c.create_folder("Café/Entwürfe")  # imapclient encodes to modified UTF-7
    assert {"Café", "Café/Entwürfe"} <= {n for _, _, n in c.list_folders()}
    c.append("Café/Entwürfe", SIMPLE)
    assert c.select_folder("Café/Entwürfe")[b"EXISTS"] == 1
    c.logout()
    assert len(imap.folder(ALICE, "Caf&AOk-/Entw&APw-rfe")) == 1


def test_delete_and_parents_that_remain(raw):
    raw.cmd("CREATE a/b")
    assert raw.cmd("DELETE a")[-1].split()[1] == b"OK"
    listed = names(raw.cmd('LIST "" "*"'))
    assert listed["a"] == b"\\Noselect \\HasChildren" and "a/b" in listed
    assert b"[NONEXISTENT]" in raw.cmd("SELECT a")[-1]
    assert b"[NONEXISTENT]" in raw.cmd("DELETE a")[-1]
    assert raw.cmd("DELETE INBOX")[-1].split()[1] == b"NO"
    assert raw.cmd("DELETE a/b")[-1].split()[1] == b"OK"
    assert "a" not in names(raw.cmd('LIST "" "*"'))


def test_rename_folder_with_children_and_subscriptions(imap, raw):
    raw.cmd("CREATE Old/Child")
    raw.cmd("SUBSCRIBE Old/Child")
    raw.cmd("SELECT Old/Child")
    raw.cmd(b"APPEND Old/Child {%d+}\r\n" % len(SIMPLE) + SIMPLE)
    raw.cmd("UNSELECT")
    assert raw.cmd("RENAME Old New")[-1].split()[1] == b"OK"
    listed = names(raw.cmd('LIST "" "*"'))
    assert "New/Child" in listed and "Old" not in listed and "Old/Child" not in listed
    assert "New/Child" in names(raw.cmd('LSUB "" "*"'))
    assert b"MESSAGES 1" in raw.cmd('STATUS "New/Child" (MESSAGES)')[0]
    assert b"[NONEXISTENT]" in raw.cmd("RENAME Nope Other")[-1]
    assert b"[ALREADYEXISTS]" in raw.cmd("RENAME New Sent")[-1]


def test_rename_inbox_moves_messages_and_keeps_inbox(imap, raw):
    imap.deliver(ALICE, SIMPLE)
    imap.deliver(ALICE, SIMPLE)
    assert raw.cmd("RENAME INBOX Archive/2024")[-1].split()[1] == b"OK"
    assert b"MESSAGES 0" in raw.cmd("STATUS INBOX (MESSAGES)")[0]
    assert b"MESSAGES 2" in raw.cmd('STATUS "Archive/2024" (MESSAGES)')[0]


def test_subscribe_and_lsub_with_percent(raw):
    raw.cmd("CREATE x/y")
    raw.cmd("SUBSCRIBE x/y")
    raw.cmd("UNSUBSCRIBE Junk")
    lsub = names(raw.cmd('LSUB "" "%"'))
    assert lsub["x"] == b"\\Noselect" and "Junk" not in lsub and lsub["INBOX"] == b""
    assert "x/y" in names(raw.cmd('LSUB "" "*"'))


def test_list_extended_special_use_subscribed_and_status(imap, raw):
    imap.deliver(ALICE, SIMPLE)
    lines = raw.cmd('LIST (SPECIAL-USE) "" "*"')
    assert set(names(lines)) == {"Drafts", "Junk", "Sent", "Trash"}
    raw.cmd("CREATE p/q")
    raw.cmd("SUBSCRIBE p/q")
    lines = raw.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
    assert b'* LIST (\\HasChildren) "/" "p" ("CHILDINFO" ("SUBSCRIBED"))\r\n' in lines
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"\r\n' in lines
    raw.cmd("SUBSCRIBE Gone")
    assert names(raw.cmd('LIST (SUBSCRIBED) "" "Gone"'))["Gone"] == b"\\NonExistent \\Subscribed"
    lines = raw.cmd('LIST "" ("INBOX" "Sent") RETURN (SUBSCRIBED STATUS (MESSAGES UNSEEN))')
    assert lines[:-1] == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"\r\n',
        b'* STATUS "INBOX" (MESSAGES 1 UNSEEN 1)\r\n',
        b'* LIST (\\HasNoChildren \\Subscribed \\Sent) "/" "Sent"\r\n',
        b'* STATUS "Sent" (MESSAGES 0 UNSEEN 0)\r\n',
    ]


def test_recursivematch_childinfo_only_for_subscribed_children_the_patterns_do_not_list(raw):
    """RFC 5258 (imaptest's listext): a parent that is not subscribed is
    listed with CHILDINFO only for a subscribed descendant that none of the
    patterns lists; when a pattern lists the child, the parent is not
    listed (was: listed with CHILDINFO anyway)."""
    for name in ("t/test2/", "t/test2/test1", "t/test8/test8", "t/test8/test9"):
        assert raw.cmd(f"CREATE {name}")[-1].split()[1] == b"OK"
    for name in ("t/test2/test1", "t/test8/test8", "t/test8/test9"):
        raw.cmd(f"SUBSCRIBE {name}")
    lines = raw.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" ("t/test2" "t/test2/test1")')
    assert lines[:-1] == [b'* LIST (\\HasNoChildren \\Subscribed) "/" "t/test2/test1"\r\n']
    lines = raw.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" ("t/test2")')
    assert lines[:-1] == [b'* LIST (\\HasChildren) "/" "t/test2" ("CHILDINFO" ("SUBSCRIBED"))\r\n']
    lines = raw.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" "t*test8"')  # test8/test9 is not listed
    assert lines[:-1] == [b'* LIST (\\HasChildren) "/" "t/test8" ("CHILDINFO" ("SUBSCRIBED"))\r\n',
                          b'* LIST (\\HasNoChildren \\Subscribed) "/" "t/test8/test8"\r\n']


def test_status_items(imap, raw):
    imap.deliver(ALICE, SIMPLE)
    imap.deliver(ALICE, SIMPLE)
    inbox = imap.folder(ALICE)
    line = raw.cmd("STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN SIZE)")[0]
    assert line == (b'* STATUS "INBOX" (MESSAGES 2 RECENT 2 UIDNEXT 3 UIDVALIDITY %d UNSEEN 2 SIZE %d)\r\n'
                    % (inbox.uidvalidity, 2 * len(SIMPLE)))
    assert b"[NONEXISTENT]" in raw.cmd("STATUS Nope (MESSAGES)")[-1]
    assert raw.cmd("STATUS INBOX (BOGUS)")[-1].split()[1] == b"BAD"


def test_select_and_examine_responses(imap, raw):
    imap.deliver(ALICE, SIMPLE)
    imap.deliver(ALICE, SIMPLE)
    inbox = imap.folder(ALICE)
    raw.cmd("SELECT INBOX")
    raw.cmd("STORE 1 +FLAGS (\\Seen $Label1)")
    closed, *lines = raw.cmd("SELECT INBOX")
    assert closed == b"* OK [CLOSED] Previous mailbox closed.\r\n"  # RFC 7162 3.2.11 (QRESYNC)
    assert lines[0] == b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1)\r\n"
    assert lines[1] == b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 \\*)] Flags permitted.\r\n"
    assert lines[2:4] == [b"* 2 EXISTS\r\n", b"* 0 RECENT\r\n"]  # the first SELECT took \Recent
    assert lines[4] == b"* OK [UNSEEN 2] First unseen.\r\n"
    assert lines[5] == b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % inbox.uidvalidity
    assert lines[6] == b"* OK [UIDNEXT 3] Predicted next UID\r\n"
    assert lines[7].startswith(b"* OK [HIGHESTMODSEQ ")
    assert lines[8].startswith(b"* OK [MAILBOXID (")  # OBJECTID (RFC 8474)
    assert b"OK [READ-WRITE] Select completed" in lines[-1]
    lines = raw.cmd("EXAMINE INBOX")
    assert b"* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n" in lines
    assert b"OK [READ-ONLY]" in lines[-1]
    assert b"[NONEXISTENT]" in raw.cmd("SELECT Nope")[-1]
    assert raw.cmd("FETCH 1 FLAGS")[-1].split()[1] == b"BAD"  # a failed SELECT leaves no selection


def test_quota_is_reported(imap, raw):
    imap.deliver(ALICE, b"x" * 5000)
    lines = raw.cmd("GETQUOTAROOT INBOX")
    assert lines[:-1] == [b'* QUOTAROOT "INBOX" ""\r\n', b'* QUOTA "" (STORAGE 5 10240)\r\n']
    assert raw.cmd('GETQUOTA ""')[0] == b'* QUOTA "" (STORAGE 5 10240)\r\n'
    assert b"[NONEXISTENT]" in raw.cmd("GETQUOTA other")[-1]
    assert b"[NOPERM]" in raw.cmd('SETQUOTA "" (STORAGE 1)')[-1]
