"""Which reply LMTP gives each recipient, decided without a server."""
from __future__ import annotations

from correo_server.directory import MailboxEntry
from correo_server.mailstore import lmtp_policy as policy

ALICE = MailboxEntry("alice@example.com", quota_bytes=1000)


def decide(entry, **kw):
    args = dict(message_bytes=100, used_bytes=0, over_quota_policy="reject", free_bytes=10**9, min_free_bytes=1000)
    args.update(kw)
    return policy.delivery_reply("alice@example.com", entry, **args)


def test_unknown_refused_at_rcpt_and_after_data():
    assert str(policy.rcpt_reply("x@example.com", None)).startswith("550 5.1.1")
    assert policy.rcpt_reply("alice@example.com", ALICE) is None
    assert str(decide(None)).startswith("550 5.1.1")


def test_suspended_is_permanent():
    reply = decide(MailboxEntry("alice@example.com", suspended=True))
    assert (reply.code, reply.status) == (550, "5.2.1")


def test_room_left_stores():
    assert decide(ALICE, used_bytes=900) is None  # exactly at the quota is fine


def test_over_quota_rejects_or_defers_per_setting():
    assert (decide(ALICE, used_bytes=901).code, decide(ALICE, used_bytes=901).status) == (552, "5.2.2")
    deferred = decide(ALICE, used_bytes=901, over_quota_policy="defer")
    assert (deferred.code, deferred.status, deferred.temporary) == (452, "4.2.2", True)


def test_over_quota_text_says_whether_the_mailbox_is_full_or_the_message_too_big():
    carol = MailboxEntry("carol@example.com", quota_bytes=1000)
    # at 57%, a message bigger than the room left: the mailbox is not "over quota"
    reply = policy.delivery_reply("carol@example.com", carol, message_bytes=500, used_bytes=570)
    assert str(reply) == "552 5.2.2 <carol@example.com>: message would exceed the mailbox quota"
    assert policy.delivery_reply("carol@example.com", carol, message_bytes=400, used_bytes=570) is None
    reply = policy.delivery_reply("carol@example.com", carol, message_bytes=500, used_bytes=570,
                                  over_quota_policy="defer")
    assert str(reply) == "452 4.2.2 <carol@example.com>: message would exceed the mailbox quota, try again later"
    # no room at all (or the quota was lowered below the usage)
    for used in (1000, 1500):
        reply = policy.delivery_reply("carol@example.com", carol, message_bytes=1, used_bytes=used)
        assert str(reply) == "552 5.2.2 <carol@example.com>: mailbox is full"
        reply = policy.delivery_reply("carol@example.com", carol, message_bytes=1, used_bytes=used,
                                      over_quota_policy="defer")
        assert str(reply) == "452 4.2.2 <carol@example.com>: mailbox is full, try again later"
    # a message larger than the whole quota, into an empty mailbox
    assert "would exceed" in policy.delivery_reply("carol@example.com", carol, message_bytes=5000,
                                                   used_bytes=0).text


def test_zero_quota_means_unlimited():
    assert decide(MailboxEntry("alice@example.com", quota_bytes=0), used_bytes=10**12) is None


def test_low_disk_defers_everyone():
    reply = decide(ALICE, free_bytes=1050)
    assert (reply.code, reply.status) == (452, "4.3.1")
    assert decide(ALICE, free_bytes=None) is None  # unknown free space: try, the store reports ENOSPC


def test_trace_headers():
    assert policy.trace_headers("bob@example.org", "alice@example.com") == (
        b"Return-Path: <bob@example.org>\r\nDelivered-To: alice@example.com\r\n")
    assert policy.trace_headers("", "alice@example.com").startswith(b"Return-Path: <>\r\n")
    assert b"\r\nX" not in policy.trace_headers("a\r\nX-Evil: 1", "alice@example.com")
