"""DNS blocklists and allowlists over the loopback DNS."""
from __future__ import annotations

import pytest

from correo_server.scanning.dnsbl import Dnsbl, DnsblSettings, DnsblZone, query_name

CLIENT = "192.0.2.99"


def lists(zone, ip, bl, code="127.0.0.2", text=None):
    name = query_name(ip, bl)
    zone.a(name, code)
    if text:
        zone.txt(name, text)


async def test_a_listed_client_is_refused_with_the_zones_text(zone, resolver):
    lists(zone, CLIENT, "bl.example", text="Listed: see https://bl.example/lookup?192.0.2.99")
    verdict = await Dnsbl(resolver, DnsblSettings((DnsblZone("bl.example"),))).check(CLIENT)
    assert [entry.zone for entry in verdict.listings] == ["bl.example"]
    assert (verdict.reply.code, verdict.reply.status, verdict.reply.reason) == (554, "5.7.1", "dnsbl")
    assert verdict.reply.text == ("Service unavailable; client host [192.0.2.99] blocked using bl.example; "
                                  "Listed: see https://bl.example/lookup?192.0.2.99")


async def test_a_client_not_listed_goes_on(zone, resolver):
    verdict = await Dnsbl(resolver, DnsblSettings((DnsblZone("bl.example"),))).check(CLIENT)
    assert verdict.reply is None and verdict.listings == ()


async def test_score_only_zones_add_up_to_the_threshold(zone, resolver):
    lists(zone, CLIENT, "a.example")
    lists(zone, CLIENT, "b.example")
    zones = (DnsblZone("a.example", action="score", weight=2), DnsblZone("b.example", action="score", weight=1),
             DnsblZone("c.example", action="score", weight=5))
    below = await Dnsbl(resolver, DnsblSettings(zones, threshold=4)).check(CLIENT)
    assert below.score == 3 and below.reply is None
    at = await Dnsbl(resolver, DnsblSettings(zones, threshold=3)).check(CLIENT)
    assert at.reply is not None and "a.example" in at.reply.text
    never = await Dnsbl(resolver, DnsblSettings(zones)).check(CLIENT)
    assert never.reply is None, "score only, no threshold: listings are only reported"


async def test_an_allowlist_listing_overrides_blocklists(zone, resolver):
    lists(zone, CLIENT, "bl.example")
    lists(zone, CLIENT, "wl.example", code="127.0.10.1")
    zones = (DnsblZone("bl.example"), DnsblZone("wl.example", action="allow"))
    verdict = await Dnsbl(resolver, DnsblSettings(zones)).check(CLIENT)
    assert verdict.allowed and verdict.reply is None
    assert {entry.zone for entry in verdict.listings} == {"bl.example", "wl.example"}


async def test_query_refused_codes_are_not_listings(zone, resolver):
    """Spamhaus answers 127.255.255.254 to queries through public resolvers."""
    lists(zone, CLIENT, "bl.example", code="127.255.255.254")
    verdict = await Dnsbl(resolver, DnsblSettings((DnsblZone("bl.example"),))).check(CLIENT)
    assert verdict.reply is None and verdict.listings == ()


async def test_return_codes_choose_which_answers_count(zone, resolver):
    lists(zone, CLIENT, "bl.example", code="127.0.0.10")
    only_2_to_3 = DnsblZone("bl.example", return_codes=("127.0.0.2", "127.0.0.3"))
    assert (await Dnsbl(resolver, DnsblSettings((only_2_to_3,))).check(CLIENT)).reply is None
    network = DnsblZone("bl.example", return_codes=("127.0.0.8/29",))
    assert (await Dnsbl(resolver, DnsblSettings((network,))).check(CLIENT)).reply is not None


async def test_a_zone_of_our_own_text(zone, resolver):
    lists(zone, CLIENT, "bl.example", text="their text")
    verdict = await Dnsbl(resolver, DnsblSettings((DnsblZone("bl.example", message="Go away"),))).check(CLIENT)
    assert verdict.reply.text.endswith("blocked using bl.example; Go away")


async def test_a_blocklist_that_fails_is_not_a_listing(zone, resolver):
    zone.fail(query_name(CLIENT, "bl.example"))
    verdict = await Dnsbl(resolver, DnsblSettings((DnsblZone("bl.example"),))).check(CLIENT)
    assert verdict.reply is None and verdict.listings == ()
    assert verdict.errors and "bl.example" in verdict.errors[0]


async def test_ipv6_clients_are_looked_up_by_nibbles(zone, resolver):
    ip = "2001:db8::25"
    assert query_name(ip, "bl.example").startswith("5.2.0.0.0.0.0.0")
    lists(zone, ip, "bl.example")
    verdict = await Dnsbl(resolver, DnsblSettings((DnsblZone("bl.example"),))).check(ip)
    assert verdict.reply is not None


async def test_verdicts_are_cached_per_client(zone, resolver):
    lists(zone, CLIENT, "bl.example")
    now = [1000.0]
    dnsbl = Dnsbl(resolver, DnsblSettings((DnsblZone("bl.example"),), cache_seconds=300), clock=lambda: now[0])
    first = await dnsbl.check(CLIENT)
    asked = len(zone.queries)
    assert await dnsbl.check(CLIENT) is first
    assert len(zone.queries) == asked, "a client that reconnects costs no DNS query"
    now[0] += 301
    assert await dnsbl.check(CLIENT) is not first, "decided again once the cached verdict is old"


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        DnsblZone("bl.example", action="block")
    with pytest.raises(ValueError):
        DnsblZone("bl.example", return_codes=("not-an-address",))
