"""Real clients against the real server: imapclient (PyPI) and Debian's
mbsync (isync) synchronising both ways; and Dovecot reading the Maildir the
store writes."""
from __future__ import annotations

import contextlib
import imaplib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import imapclient
import imapclient.imapclient as imapclient_consts
import pytest

from imaptest_messages import ATTACHMENT, MIXED, SIMPLE, SIMPLE_BODY
from imaptest_support import ALICE, PASSWORD, RawClient, ServerThread


def test_imapclient_session(imap):
    imap.deliver(ALICE, SIMPLE)
    imap.deliver(ALICE, MIXED)
    c = imapclient.IMAPClient("127.0.0.1", port=imap.port, ssl=False)
    c.login(ALICE, PASSWORD)
    assert c.has_capability("IDLE") and c.has_capability("MOVE") and c.has_capability("UIDPLUS")
    folders = {name: flags for flags, _delim, name in c.list_folders()}
    assert folders["Sent"] == (b"\\HasNoChildren", b"\\Sent")
    assert c.find_special_folder(imapclient_consts.TRASH) == "Trash"
    info = c.select_folder("INBOX")
    assert info[b"EXISTS"] == 2 and info[b"UIDNEXT"] == 3
    data = c.fetch([1, 2], ["ENVELOPE", "BODYSTRUCTURE", "RFC822.SIZE", "FLAGS", "INTERNALDATE"])
    env = data[1][b"ENVELOPE"]
    assert env.subject == b"=?utf-8?q?Caf=C3=A9_menu?=" and env.from_[0].mailbox == b"bob"
    assert env.to[1].host == b"example.com" and env.message_id == b"<simple@example.org>"
    bs = data[2][b"BODYSTRUCTURE"]
    assert bs.is_multipart and bs[1] == b"mixed"
    assert data[2][b"RFC822.SIZE"] == len(MIXED)
    assert c.fetch([1], ["BODY.PEEK[TEXT]"])[1][b"BODY[TEXT]"] == SIMPLE_BODY
    assert c.search(["FROM", "bob", "NOT", "SEEN"]) == [1, 2]
    assert c.search(["SUBJECT", "café"], charset="UTF-8") == [1]
    c.add_flags([1], [imapclient.SEEN, b"$Important"])
    assert set(c.get_flags([1])[1]) == {b"\\Seen", b"\\Recent", b"$Important"}
    c.remove_flags([1], [b"$Important"])
    c.copy([1], "Sent")
    c.move([2], "Trash")
    assert c.folder_status("Trash", ["MESSAGES"])[b"MESSAGES"] == 1
    c.append("Drafts", SIMPLE, flags=[imapclient.DRAFT])
    c.create_folder("Projects/Alpha")
    c.rename_folder("Projects/Alpha", "Projects/Beta")
    assert c.folder_exists("Projects/Beta") and not c.folder_exists("Projects/Alpha")
    c.subscribe_folder("Projects/Beta")
    assert "Projects/Beta" in [n for _, _, n in c.list_sub_folders()]
    c.delete_folder("Projects/Beta")
    assert c.get_quota_root("INBOX")[1][0].limit == 10 * 1024
    c.add_flags([1], [imapclient.DELETED])
    c.uid_expunge([1])
    assert c.search() == []
    assert c.namespace().personal == (("", "/"),)
    c.id_({"name": "pytest"})
    c.unselect_folder()
    c.logout()


def _mbsync_config(tmp_path: Path, port: int) -> Path:
    local = tmp_path / "local"
    local.mkdir(exist_ok=True)
    conf = tmp_path / "mbsyncrc"
    conf.write_text(textwrap.dedent(f"""\
        IMAPAccount correo
        Host 127.0.0.1
        Port {port}
        User {ALICE}
        Pass {PASSWORD}
        SSLType None
        AuthMechs PLAIN

        IMAPStore remote
        Account correo

        MaildirStore local
        Path {local}/
        Inbox {local}/INBOX
        SubFolders Verbatim

        Channel sync
        Far :remote:
        Near :local:
        Patterns *
        Create Both
        Expunge Both
        SyncState *
        CopyArrivalDate yes
        """))
    return conf


def _mbsync(conf: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(["mbsync", "-c", str(conf), "-a"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _plain(data: bytes) -> bytes:
    """What mbsync keeps locally: LF line ends, plus its own X-TUID header."""
    data = data.replace(b"\r\n", b"\n")
    return b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(b"X-TUID: "))


def _local_messages(folder: Path) -> list[bytes]:
    return sorted(_plain(p.read_bytes()) for sub in ("cur", "new") for p in (folder / sub).iterdir())


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync (mbsync) is not installed (scripts/setup-test-env installs it)")
def test_mbsync_synchronises_both_ways(imap, tmp_path):
    binary = SIMPLE.replace(b"Line two", b"Line two\r\n" + ATTACHMENT.replace(b"\r", b"").replace(b"\n", b""))
    imap.deliver(ALICE, SIMPLE)
    imap.deliver(ALICE, MIXED)
    imap.deliver(ALICE, binary)
    conf = _mbsync_config(tmp_path, imap.port)
    _mbsync(conf)
    local = tmp_path / "local"
    assert _local_messages(local / "INBOX") == sorted(_plain(m) for m in (SIMPLE, MIXED, binary))
    for name in ("Sent", "Drafts", "Trash", "Junk"):
        assert (local / name / "cur").is_dir()

    # local changes go up: a new message in Sent, a message marked seen and one deleted
    sent_new = local / "Sent" / "new" / f"{int(time.time())}.1.local"
    sent_new.write_bytes(MIXED)
    inbox_files = sorted((local / "INBOX" / "new").iterdir()) + sorted((local / "INBOX" / "cur").iterdir())
    seen_file = [p for p in inbox_files if _plain(p.read_bytes()) == _plain(SIMPLE)][0]
    gone_file = [p for p in inbox_files if _plain(p.read_bytes()) == _plain(MIXED)][0]
    seen_file.rename(local / "INBOX" / "cur" / (seen_file.name.split(":")[0] + ":2,S"))
    gone_file.rename(local / "INBOX" / "cur" / (gone_file.name.split(":")[0] + ":2,T"))
    # a server change comes down
    imap.deliver(ALICE, b"Subject: later\r\n\r\nlater\r\n")
    _mbsync(conf)

    inbox = imap.folder(ALICE)
    flags = {imap.call(inbox.read(m.uid)): m.flags for m in inbox.messages()}
    assert "\\Seen" in flags[SIMPLE]
    assert MIXED not in flags  # deleted locally, expunged on both sides
    assert imap.folder(ALICE, "Sent").messages() and len(imap.folder(ALICE, "Sent")) == 1
    assert _plain(b"Subject: later\r\n\r\nlater\r\n") in _local_messages(local / "INBOX")
    # a third run has nothing to do and changes nothing
    before = [(m.uid, m.flags) for m in imap.folder(ALICE).messages()]
    _mbsync(conf)
    assert [(m.uid, m.flags) for m in imap.folder(ALICE).messages()] == before


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync (mbsync) is not installed (scripts/setup-test-env installs it)")
def test_mbsync_with_a_non_ascii_local_folder_gets_a_refusal_not_duplicates(imap, tmp_path):
    """mbsync 1.4 sends a local folder name as raw UTF-8.  The server refuses
    it (not modified UTF-7) instead of creating "Caf&AOk-", which mbsync would
    then see as another folder and copy back as a duplicate on every run."""
    conf = _mbsync_config(tmp_path, imap.port)
    local = tmp_path / "local"
    for sub in ("cur", "new", "tmp"):
        (local / "Café" / sub).mkdir(parents=True)
    (local / "Café" / "new" / "1.1.local").write_bytes(b"Subject: x\n\nhello\n")
    for _ in range(2):
        result = subprocess.run(["mbsync", "-c", str(conf), "-a"], capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert "NO [CANNOT] Mailbox name is not valid modified UTF-7" in result.stdout + result.stderr
    assert sorted(p.name for p in local.iterdir()) == ["Café", "Drafts", "INBOX", "Junk", "Sent", "Trash"]
    c = RawClient(imap.port)
    c.login()
    listed = [line for line in c.cmd('LIST "" "*"') if line.startswith(b"* LIST")]
    assert len(listed) == 5 and not any(b"&" in line for line in listed)

    # a folder with a valid modified UTF-7 name syncs down and up again as one folder
    shutil.rmtree(local / "Café")
    assert c.cmd('CREATE "Entw&APw-rfe"')[-1].split()[1] == b"OK"
    assert c.cmd(b'APPEND "Entw&APw-rfe" {%d+}\r\n' % len(SIMPLE) + SIMPLE)[-1].split()[1] == b"OK"
    _mbsync(conf)
    _mbsync(conf)
    assert _local_messages(local / "Entw&APw-rfe") == [_plain(SIMPLE)]
    listed = [line for line in c.cmd('LIST "" "*"') if line.startswith(b"* LIST")]
    assert len(listed) == 6 and len(imap.folder(ALICE, "Entw&APw-rfe")) == 1


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


needs_dovecot = pytest.mark.skipif(shutil.which("dovecot") is None or os.geteuid() != 0,
                                   reason="needs Dovecot (scripts/setup-test-env installs it), and root to run it "
                                          "and hand the files to its user")


@contextlib.contextmanager
def dovecot_serving(maildir_source: Path | None = None):
    """A Dovecot IMAP server on 127.0.0.1 (a free port) over a Maildir in a
    world-readable temporary folder (pytest's are closed to Dovecot's user):
    a copy of ``maildir_source``, or a new one.  Yields (port, maildir path);
    any user logs in with the password "pw"."""
    base = Path(tempfile.mkdtemp(prefix="correo-dovecot-"))
    os.chmod(base, 0o755)
    maildir = base / "maildir"
    if maildir_source is not None:
        shutil.copytree(maildir_source, maildir)
    else:
        maildir.mkdir()
    subprocess.run(["chown", "-R", "nobody:nogroup", str(maildir)], check=True)
    run = base / "run"
    run.mkdir()
    port = _free_port()
    conf = base / "dovecot.conf"
    conf.write_text(textwrap.dedent(f"""\\
        protocols = imap
        listen = 127.0.0.1
        base_dir = {run}
        state_dir = {run}
        ssl = no
        log_path = {run}/dovecot.log
        mail_location = maildir:{maildir}
        first_valid_uid = 1
        default_login_user = nobody
        default_internal_user = nobody
        auth_mechanisms = plain
        disable_plaintext_auth = no
        namespace inbox {{
          inbox = yes
          separator = /
        }}
        userdb {{
          driver = static
          args = uid=nobody gid=nogroup home={maildir}
        }}
        passdb {{
          driver = static
          args = password=pw
        }}
        service imap-login {{
          inet_listener imap {{
            address = 127.0.0.1
            port = {port}
          }}
        }}
        """))
    proc = subprocess.Popen(["dovecot", "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    log = run / "dovecot.log"
                    pytest.skip("Dovecot did not start here: " + (log.read_text()[-300:] if log.exists() else ""))
                time.sleep(0.1)
        yield port, maildir
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)


@needs_dovecot
def test_dovecot_serves_the_maildir_correo_wrote(imap):
    """The storage is plain Maildir++: Dovecot, pointed at a copy, shows the
    same folders, messages (byte for byte), flags and keywords."""
    imap.deliver(ALICE, SIMPLE)
    imap.deliver(ALICE, MIXED)
    c = RawClient(imap.port)
    c.login()
    c.cmd("SELECT INBOX")
    c.cmd("STORE 1 +FLAGS (\\Seen $Work)")
    c.cmd("CREATE Projects/2024")
    c.cmd("COPY 2 Projects/2024")
    c.close()
    with dovecot_serving(imap.store.data_dir / ALICE) as (port, _):
        client = imaplib.IMAP4("127.0.0.1", port)
        client.login("alice", "pw")
        _, listing = client.list()
        names = {line.decode().rsplit(" ", 1)[-1].strip('"') for line in listing}
        assert {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Projects/2024"} <= names
        client.select("INBOX")
        _, data = client.fetch("1:2", "(FLAGS BODY.PEEK[])")
        assert data[0][1] == SIMPLE and b"\\Seen" in data[0][0] and b"$Work" in data[0][0]
        assert data[2][1] == MIXED
        client.select('"Projects/2024"')
        _, data = client.fetch("1", "(BODY.PEEK[])")
        assert data[0][1] == MIXED
        client.logout()


@needs_dovecot
def test_correo_takes_over_a_maildir_dovecot_kept(tmp_path, config, directory):
    """Migration: the UIDs, UIDVALIDITY, flags, keywords and subscriptions a
    Dovecot user's clients know stay the same under correo, and messages
    Dovecot stored with LF line ends come back as Dovecot served them."""
    with dovecot_serving() as (port, maildir):
        d = imaplib.IMAP4("127.0.0.1", port)
        d.login("alice", "pw")
        d.create("Work/Projects")
        d.subscribe("Work/Projects")
        d.subscribe("INBOX")
        for msg in (SIMPLE, MIXED, b"Subject: gone\r\n\r\nx\r\n", SIMPLE):
            d.append("INBOX", "(\\Seen $Label1)" if msg is MIXED else None, None, msg)
        d.select("INBOX")
        d.store("3", "+FLAGS", "(\\Deleted)")
        d.expunge()
        _, status = d.status("INBOX", "(UIDVALIDITY UIDNEXT)")
        _, dovecot_view = d.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
        d.logout()
        target = Path(config.mailstore.data_dir) / ALICE
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(maildir, target)
    server = ServerThread(config, directory)
    try:
        c = RawClient(server.port)
        c.login()
        mine = c.cmd("STATUS INBOX (UIDVALIDITY UIDNEXT)")[0]
        assert re.search(rb"UIDVALIDITY (\d+)", mine).group(1) == re.search(rb"UIDVALIDITY (\d+)", status[0]).group(1)
        assert re.search(rb"UIDNEXT (\d+)", mine).group(1) == re.search(rb"UIDNEXT (\d+)", status[0]).group(1)
        c.cmd("SELECT INBOX")
        lines = c.cmd("UID FETCH 1:* (FLAGS BODY.PEEK[])")[:-1]
        expected = [(re.search(rb"UID (\d+)", head).group(1), body) for head, body in dovecot_view[::2]]
        got = [(re.search(rb"UID (\d+)", l).group(1), l.split(b"}\r\n", 1)[1].rsplit(b")", 1)[0]) for l in lines]
        assert got == expected == [(b"1", SIMPLE), (b"2", MIXED), (b"4", SIMPLE)]
        assert b"$Label1" in lines[1] and b"\\Seen" in lines[1]
        lsub = c.cmd('LSUB "" "*"')
        assert b'* LSUB () "/" "INBOX"\r\n' in lsub and b'* LSUB () "/" "Work/Projects"\r\n' in lsub
        assert re.search(rb"OK \[APPENDUID \d+ 5\]", c.cmd(b"APPEND INBOX {4+}\r\nabcd")[-1])
    finally:
        server.stop()


def test_a_thunderbird_session(imap):
    """The commands Thunderbird sends, in its spelling, and what it relies on."""
    import base64
    imap.deliver(ALICE, SIMPLE)
    imap.deliver(ALICE, MIXED)
    c = RawClient(imap.port)
    assert c.cmd("capability")[-1].split()[1] == b"OK"
    c.cmd('ID ("name" "Thunderbird" "version" "115.3.1")')
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    assert b"OK [CAPABILITY" in c.cmd(f"authenticate PLAIN {token}")[-1]
    assert c.cmd("namespace")[0].startswith(b"* NAMESPACE")
    lines = c.cmd('list (subscribed) "" "*" return (special-use)')
    assert b'* LIST (\\Subscribed \\Sent) "/" "Sent"\r\n' in lines or \
        b'* LIST (\\HasNoChildren \\Subscribed \\Sent) "/" "Sent"\r\n' in lines
    lines = c.cmd('select "INBOX" (CONDSTORE)')
    assert any(l.startswith(b"* OK [HIGHESTMODSEQ ") for l in lines)
    assert c.cmd('getquotaroot "INBOX"')[1].startswith(b'* QUOTA "" (STORAGE ')
    lines = c.cmd("UID fetch 1:* (FLAGS)")
    assert lines[0].startswith(b"* 1 FETCH (UID 1 FLAGS (\\Recent) MODSEQ (")
    lines = c.cmd("UID fetch 1:2 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date "
                  "Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])")
    assert b"BODY[HEADER.FIELDS (FROM TO CC BCC SUBJECT DATE MESSAGE-ID PRIORITY X-PRIORITY REFERENCES " \
           b"NEWSGROUPS IN-REPLY-TO CONTENT-TYPE REPLY-TO)] {" in lines[0]
    assert b"Subject: =?utf-8?q?Caf=C3=A9_menu?=\r\n" in lines[0]
    lines = c.cmd("UID fetch 2 (UID RFC822.SIZE BODYSTRUCTURE)")
    assert b'"mixed"' in lines[0]
    lines = c.cmd("UID fetch 2 (UID RFC822.SIZE BODY.PEEK[1.1.MIME] BODY.PEEK[1.1])")
    assert b"quoted-printable" in lines[0]
    c.send(b"i IDLE\r\n")
    assert c.readline() == b"+ idling\r\n"
    imap.deliver(ALICE, SIMPLE)
    assert c.readline() == b"* 3 EXISTS\r\n"
    c.readline()  # RECENT
    c.send(b"DONE\r\n")
    assert c.readline().startswith(b"i OK")
    assert b"* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent) MODSEQ (" in c.cmd("UID store 1 +Flags (\\Seen)")[0]
    lines = c.cmd('UID move 2 "Trash"')
    assert lines[0].startswith(b"* OK [COPYUID ") and lines[1] == b"* 2 EXPUNGE\r\n"
    lines = c.cmd(b'append "Sent" (\\Seen) "27-Nov-2026 07:00:00 +0100" {%d+}\r\n' % len(SIMPLE) + SIMPLE)
    assert b"[APPENDUID " in lines[-1]
    assert b'* STATUS "Sent" (UIDNEXT 2 MESSAGES 1 UNSEEN 0 RECENT 1)\r\n' in \
        c.cmd('STATUS "Sent" (UIDNEXT MESSAGES UNSEEN RECENT)')
    assert c.cmd("logout")[0] == b"* BYE Logging out\r\n"
