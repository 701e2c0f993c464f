"""What the logs say an admin needs to know: why a login failed (a
suspended mailbox is named, never to the client) and what a directory
reload changed, not only how many mailboxes there are."""
from __future__ import annotations

import structlog

from correo_server import directory as dirmod
from correo_server import passwords
from correo_server.directory import Directory, MailboxEntry
from correo_server.guard import LoginThrottle
from correo_server.login import check_login

HASH = passwords.hash_password("right", b"0123456789abcdef")


def entry(address="bob@example.com", **kw) -> MailboxEntry:
    return MailboxEntry(address=address, password_hash=kw.pop("password_hash", HASH), **kw)


async def attempt(directory: Directory, user: str, password: str):
    return await check_login(directory, LoginThrottle(base=0, maximum=0), "192.0.2.1", user, password)


async def test_a_failed_login_says_why_in_the_log_field_and_the_same_to_the_client():
    d = Directory((entry(), entry("sus@example.com", suspended=True), entry("nohash@example.com", password_hash=None)))
    cases = {("nobody@example.com", "right"): ("invalid", "unknown_user"),
             ("bob@example.com", "wrong"): ("invalid", "wrong_password"),
             ("bob@example.com", ""): ("invalid", "empty_password"),
             ("nohash@example.com", "x"): ("invalid", "no_password_set"),
             ("sus@example.com", "wrong"): ("invalid", "suspended_wrong_password"),  # the client learns nothing
             ("sus@example.com", "right"): ("suspended", "suspended")}
    for (user, password), expected in cases.items():
        result = await attempt(d, user, password)
        assert (result.failure, result.detail) == expected, (user, password)
    assert (await attempt(d, "bob@example.com", "right")).ok


def test_a_directory_reload_logs_what_changed():
    before = Directory((entry("alice@example.com"), entry(), entry("carol@example.com")))
    after = Directory((entry("alice@example.com", quota_bytes=1 << 20, password_hash=HASH + "x"),
                       entry(suspended=True), entry("dave@example.com")))
    assert dirmod.changes(before, after) == {
        "added": ["dave@example.com"], "removed": ["carol@example.com"],
        "changed": ["alice@example.com: password, quota", "bob@example.com: suspended"]}
    assert dirmod.changes(after, after) == {}

    reload_log = dirmod.ReloadLog(structlog.get_logger())
    reload_log.previous = before
    with structlog.testing.capture_logs() as events:
        reload_log(after)
    (event,) = events
    assert event["event"] == "directory_reloaded" and event["mailboxes"] == 3
    assert event["changed"] == ["alice@example.com: password, quota", "bob@example.com: suspended"]
    assert HASH not in repr(event)  # a password change is named, never shown
