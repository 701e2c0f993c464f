"""MailstoreService in-process: what start() binds, what stop() does to open
sessions, and the side port's answers."""
from __future__ import annotations

import asyncio
import json
import os
import poplib
import smtplib
from pathlib import Path

import pytest

from correo_server.mailstore.datalock import LOCK_FILE, DataDirInUse
from correo_server.mailstore.service import MailstoreService

from .delivery_support import ALICE, BOB, PASSWORDS, http_get, lmtp_deliver

MESSAGE = b"Subject: s\r\nMessage-ID: <s1@example.org>\r\n\r\nbody\r\n"


def test_listeners_follow_configuration(start_mailstore):
    plain = start_mailstore(tls=False, pop3_enabled=True)
    assert set(plain.ports) == {"lmtp", "pop3", "http"}  # no certificate: no POP3S
    plain.stop()
    no_pop = start_mailstore(pop3_enabled=False)
    assert set(no_pop.ports) == {"lmtp", "http"}
    assert http_get(no_pop.ports["http"], "/readyz")[0] == 200


def test_stop_ends_pop3_sessions_without_update_and_closes_lmtp(start_mailstore):
    mailstore = start_mailstore()
    lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [ALICE], MESSAGE)
    pop = poplib.POP3("127.0.0.1", mailstore.ports["pop3"], timeout=30)
    pop.user(ALICE)
    pop.pass_(PASSWORDS[ALICE])
    pop.dele(1)
    lmtp = smtplib.LMTP("127.0.0.1", mailstore.ports["lmtp"], timeout=30)
    lmtp.ehlo()
    mailstore.stop()
    with pytest.raises(poplib.error_proto, match=r"SYS/TEMP.*shutting down"):
        pop.stat()
    with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
        lmtp.noop()
    pop.close()
    restarted = start_mailstore()
    assert len(restarted.inbox(ALICE)[1]) == 1  # DELE without QUIT removed nothing


def test_status_and_metrics_on_the_side_port(mailstore):
    assert http_get(mailstore.ports["http"], "/readyz") == (200, b"ready\n")
    lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [ALICE, BOB, "nobody@example.com"], MESSAGE)
    code, body = http_get(mailstore.ports["http"], "/status")
    doc = json.loads(body)
    assert code == 200 and doc["ready"] is True and doc["time"].endswith("Z")
    stored = len(mailstore.read(ALICE, mailstore.inbox(ALICE)[1][0].uid))
    assert doc["mailboxes"][ALICE]["messages"] == 1
    assert doc["mailboxes"][ALICE]["bytes"] == stored
    assert doc["mailboxes"][BOB]["lastDelivery"] is not None
    code, body = http_get(mailstore.ports["http"], "/metrics")
    text = body.decode()
    assert 'correo_mailstore_deliveries_total{result="delivered"} 2' in text
    assert 'correo_mailstore_deliveries_total{result="rejected"} 1' in text
    assert "# TYPE correo_mailstore_stored_bytes gauge" in text
    assert f"correo_mailstore_stored_messages 2" in text
    assert 'correo_mailstore_mailbox_quota_bytes{mailbox="dave@example.com"} 3000' in text


def test_a_second_mailstore_on_the_same_data_folder_refuses_to_start(start_mailstore):
    """One left running (say, orphaned) keeps the folder; a second one on the
    same dataDir fails at start, naming the folder and the holder's pid,
    before it touches anything — and the first one goes on serving."""
    first = start_mailstore()
    data_dir = Path(first.config.mailstore.data_dir)
    lock_file = data_dir / LOCK_FILE
    assert lock_file.read_text().split()[0] == str(os.getpid())

    second = MailstoreService(first.config, str(first.config_dir))
    with pytest.raises(DataDirInUse) as refused:
        asyncio.run(second.start())
    assert str(refused.value).startswith(f"the mail data folder {data_dir} is in use by another mailstore "
                                         f"(pid {os.getpid()})")
    assert second.ctx is None  # no store was opened
    assert lmtp_deliver(first.ports["lmtp"], "x@example.org", [ALICE], MESSAGE).replies[ALICE][0] == 250

    first.stop()  # stop() lets go of the folder
    assert lock_file.read_text() == ""
    third = start_mailstore()
    assert len(third.inbox(ALICE)[1]) == 1


def test_mail_refused_for_suspension_or_quota_shows_on_the_mailbox_status(start_mailstore):
    """An owner whose mail bounces can be told why: each mailbox's /status
    entry counts what LMTP refused for it and shows the last reply."""
    import time
    from .delivery_support import CAROL, DAVE
    mailstore = start_mailstore()
    before = time.time()
    big = b"Subject: big\r\n\r\n" + b"z" * 4000 + b"\r\n"
    result = lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [CAROL, DAVE, ALICE, "nobody@example.com"], big)
    assert [result.replies[r][0] for r in (CAROL, DAVE, ALICE)] == [550, 552, 250]
    lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [DAVE], big)
    doc = json.loads(http_get(mailstore.ports["http"], "/status")[1])["mailboxes"]
    assert doc[CAROL]["refused"] == 1
    assert doc[CAROL]["lastRefusal"]["reason"] == "550 5.2.1 <carol@example.com>: mailbox is disabled"
    assert doc[DAVE]["refused"] == 2
    assert doc[DAVE]["lastRefusal"]["reason"] == "552 5.2.2 <dave@example.com>: message would exceed the mailbox quota"
    when = doc[DAVE]["lastRefusal"]["time"]
    assert when.endswith("Z") and when >= time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(before)))
    assert doc[ALICE]["refused"] == 0 and doc[ALICE]["lastRefusal"] is None
    assert doc[ALICE]["messages"] == 1 and doc[DAVE]["messages"] == 0  # the existing fields are unchanged
    assert "nobody@example.com" not in doc


def test_a_full_disk_is_not_blamed_on_the_mailbox(start_mailstore):
    mailstore = start_mailstore(min_free_bytes=1 << 62)
    assert lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [ALICE], MESSAGE).replies[ALICE][0] == 452
    doc = json.loads(http_get(mailstore.ports["http"], "/status")[1])["mailboxes"]
    assert doc[ALICE]["refused"] == 0 and doc[ALICE]["lastRefusal"] is None
