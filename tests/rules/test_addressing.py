"""Subaddresses and the catch-all: one resolution, the same answer at the
relay's RCPT, in the queue's routing and at the mailstore."""
from __future__ import annotations

import pytest

from correo_server.addressing import resolve, split_detail
from correo_server.config import Domain, ServerConfig
from correo_server.directory import Directory, MailboxEntry
from correo_server.queue.intake import Refusal, expand
from correo_server.relay.policy import Listener, check_recipient
from correo_server.wire.paths import parse_path

ANA = MailboxEntry("ana@example.com", aliases=("info@example.com",))
BOB = MailboxEntry("bob@example.com", forward_to=("bob@home.example",), keep_copy=True)
ALL = MailboxEntry("all@example.com")


def directory(**domain) -> Directory:
    cfg = ServerConfig(name="t", hostname="mail.example.com",
                       domains=(Domain("example.com", aliases=("example.net",), **domain),))
    return Directory((ANA, BOB, ALL), cfg)


@pytest.mark.parametrize("local,delimiter,expected", [
    ("ana+news", "+", ("ana", "news")),
    ("ana+news+tech", "+", ("ana", "news+tech")),  # the first delimiter splits
    ("ana-news", "+-", ("ana", "news")),
    ("ana+", "+", ("ana", "")),
    ("+news", "+", ("+news", None)),  # no user: not a subaddress
    ("ana", "+", ("ana", None)),
    ("ana+news", "", ("ana+news", None)),  # delimiter "" turns subaddressing off
])
def test_split_detail(local, delimiter, expected):
    assert split_detail(local, delimiter) == expected


class TestResolve:
    def test_address_alias_and_alias_domain(self):
        d = directory()
        assert d.resolve("ANA@Example.COM").entry is ANA
        found = d.resolve("info@example.net")
        assert (found.entry, found.address, found.via) == (ANA, "ana@example.com", "address")

    def test_a_subaddress_keeps_its_detail_on_the_mailboxs_own_address(self):
        found = directory().resolve("info+Lists@example.net")
        assert (found.entry, found.address, found.detail, found.via) == (
            ANA, "ana+Lists@example.com", "Lists", "detail")

    def test_the_domains_delimiters(self):
        d = directory(recipient_delimiter="-_")
        assert d.resolve("ana_x@example.com").address == "ana_x@example.com"
        assert d.resolve("ana-x@example.com").detail == "x"
        assert d.resolve("ana+x@example.com") is None

    def test_catch_all_takes_unknown_addresses_as_they_were_written(self):
        d = directory(catch_all="all@example.com")
        found = d.resolve("Sales@example.net")
        assert (found.entry, found.address, found.via) == (ALL, "Sales@example.com", "catch-all")
        assert d.resolve("ana@example.com").entry is ANA  # known addresses are unaffected
        assert d.resolve("x@elsewhere.org") is None  # only the domain's own addresses

    def test_logins_and_senders_never_use_the_catch_all(self):
        d = directory(catch_all="all@example.com")
        assert d.lookup("nobody@example.com") is None
        assert d.recipient("nobody@example.com") is ALL
        assert d.owns(ANA, "info@example.com") and not d.owns(ANA, "ana+x@example.com")

    def test_a_catch_all_that_names_no_mailbox_refuses_as_before(self):
        assert directory(catch_all="gone@example.com").recipient("x@example.com") is None

    def test_resolve_is_pure_over_any_index(self):
        index = {"a@x.org": MailboxEntry("a@x.org")}
        assert resolve("a+b@X.org", index.get, None).address == "a+b@x.org"


class TestEveryHopAgrees:
    """The relay accepts at RCPT exactly what the queue routes to the mailstore."""

    CFG_KW = dict(catch_all="all@example.com")

    def relay_accepts(self, d: Directory, address: str) -> bool:
        rcpt, _ = parse_path(f"<{address}>", allow_null=False)
        return check_recipient(Listener.SMTP, False, rcpt, d.config, d) is None

    @pytest.mark.parametrize("address,delivered", [
        ("ana+news@example.com", ["ana+news@example.com"]),
        ("info+news@example.net", ["ana+news@example.com"]),
        ("whoever@example.com", ["whoever@example.com"]),
        ("bob+x@example.com", ["bob+x@example.com", "bob@home.example"]),
    ])
    def test_relay_queue_and_mailstore(self, address, delivered):
        d = directory(**self.CFG_KW)
        assert self.relay_accepts(d, address)
        routed = expand(d.config, d, address)
        assert [r.address for r in routed] == delivered
        for r in routed:
            if r.local:
                assert d.recipient(r.address) is not None  # the mailstore's RCPT takes it

    def test_without_a_catch_all_an_unknown_address_is_refused_everywhere(self):
        d = directory()
        assert not self.relay_accepts(d, "whoever@example.com")
        assert isinstance(expand(d.config, d, "whoever@example.com"), Refusal)
        assert d.recipient("whoever@example.com") is None
