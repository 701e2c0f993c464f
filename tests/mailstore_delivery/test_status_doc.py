"""The /status document lists every mailbox of the directory with its usage
and the mail refused for it."""
from __future__ import annotations

from correo_server.directory import Directory, MailboxEntry
from correo_server.mailstore import lmtp_policy as policy
from correo_server.mailstore import status
from correo_server.mailstore.refusals import RefusalLog, is_mailbox_refusal


def test_every_mailbox_listed_with_usage_and_quota():
    directory = Directory((MailboxEntry("alice@example.com", quota_bytes=5000),
                           MailboxEntry("bob@example.com", quota_bytes=0)))
    doc = status.build(directory, {"alice@example.com": status.Usage(2, 300, 1764222422.5)},
                       ready=True, now=1764222430)
    assert doc == {
        "service": "mailstore", "ready": True, "time": "2025-11-27T05:47:10Z",
        "mailboxes": {
            "alice@example.com": {"messages": 2, "bytes": 300, "quotaBytes": 5000,
                                  "lastDelivery": "2025-11-27T05:47:02Z", "refused": 0, "lastRefusal": None, "junk": 0},
            "bob@example.com": {"messages": 0, "bytes": 0, "quotaBytes": 0, "lastDelivery": None,
                                "refused": 0, "lastRefusal": None, "junk": 0},
        },
    }


def test_refused_mail_is_counted_per_mailbox_with_the_last_reason():
    directory = Directory((MailboxEntry("alice@example.com", quota_bytes=5000),
                           MailboxEntry("Carol@example.com", suspended=True)))
    log = RefusalLog()
    log.record("carol@example.com", "550 5.2.1 <carol@example.com>: mailbox is disabled", 1764222400)
    log.record("CAROL@example.com", "550 5.2.1 <c@example.net>: mailbox is disabled", 1764222422.9)
    doc = status.build(directory, {}, ready=True, now=1764222430, refusals=log)
    assert doc["mailboxes"]["carol@example.com"]["refused"] == 2
    assert doc["mailboxes"]["carol@example.com"]["lastRefusal"] == {
        "time": "2025-11-27T05:47:02Z", "reason": "550 5.2.1 <c@example.net>: mailbox is disabled"}
    assert doc["mailboxes"]["alice@example.com"]["refused"] == 0
    assert doc["mailboxes"]["alice@example.com"]["lastRefusal"] is None


def test_only_mailbox_status_refusals_count():
    """Suspended and over quota (RFC 3463 X.2.X) belong to the mailbox; an
    unknown address, a full disk or a failed write do not."""
    assert is_mailbox_refusal(policy.suspended("a@example.com"))
    assert is_mailbox_refusal(policy.over_quota_reply("a@example.com", "reject", used_bytes=9, quota_bytes=9))
    assert is_mailbox_refusal(policy.over_quota_reply("a@example.com", "defer", used_bytes=1, quota_bytes=9))
    assert not is_mailbox_refusal(policy.unknown("a@example.com"))
    assert not is_mailbox_refusal(policy.disk_full())
    assert not is_mailbox_refusal(policy.store_failed())
    assert not is_mailbox_refusal(policy.stored("a@example.com", 1))
