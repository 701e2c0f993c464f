"""The /status document lists every mailbox of the directory with its usage."""
from __future__ import annotations

from correo_server.directory import Directory, MailboxEntry
from correo_server.mailstore import status


def test_every_mailbox_listed_with_usage_and_quota():
    directory = Directory((MailboxEntry("alice@example.com", quota_bytes=5000),
                           MailboxEntry("bob@example.com", quota_bytes=0)))
    doc = status.build(directory, {"alice@example.com": status.Usage(2, 300, 1764222422.5)},
                       ready=True, now=1764222430)
    assert doc == {
        "service": "mailstore", "ready": True, "time": "2025-11-27T05:47:10Z",
        "mailboxes": {
            "alice@example.com": {"messages": 2, "bytes": 300, "quotaBytes": 5000,
                                  "lastDelivery": "2025-11-27T05:47:02Z"},
            "bob@example.com": {"messages": 0, "bytes": 0, "quotaBytes": 0, "lastDelivery": None},
        },
    }
