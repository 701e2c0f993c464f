"""Never an open relay: port 25 takes mail for hosted mailboxes only, in
every address form that has ever tricked a server into relaying; the
submission ports take nothing before AUTH."""
from __future__ import annotations

import smtplib

import pytest

from relay_helpers import PASSWORDS, RawClient, in_thread, smtp_client

RELAY_FORMS = [
    "<user@foreign.example>",
    "<USER@FOREIGN.EXAMPLE>",
    "<user@foreign.example.>",
    "<user%foreign.example@example.com>",
    "<user%foreign.example@example.net>",
    "<user%foreign.example@[127.0.0.1]>",
    "<@example.com:user@foreign.example>",
    "<@example.com,@example.net:user@foreign.example>",
    "<@foreign.example:alice@example.com>",
    '<"user@foreign.example"@example.com>',
    '<"user@foreign.example">',
    "<foreign.example!user@example.com>",
    "<foreign.example!user>",
    "<foreign.example!user%other.example@example.com>",
    "<user@[192.0.2.1]>",
    "<user@[IPv6:2001:db8::1]>",
    "user@foreign.example",
]


async def test_port_25_refuses_every_relay_form(make_relay):
    relay = await make_relay()
    client = await RawClient.connect(relay.smtp)
    assert (await client.cmd("EHLO attacker.example"))[0] == 250
    for form in RELAY_FORMS:
        assert (await client.cmd("MAIL FROM:<spammer@foreign.example>"))[0] == 250
        code, lines = await client.cmd(f"RCPT TO:{form}")
        assert (code, lines[-1][4:9]) == (554, "5.7.1"), (form, lines)
        code, lines = await client.cmd("DATA")
        assert (code, lines[-1][4:9]) == (554, "5.5.1"), "no recipient means no DATA"
        assert (await client.cmd("RSET"))[0] == 250
    await client.close()
    assert relay.sink.messages == []


async def test_port_25_refuses_relay_forms_mixed_with_a_good_recipient(make_relay):
    """A valid local recipient in the same transaction does not open the door."""
    relay = await make_relay()

    def send():
        with smtp_client(relay.smtp) as client:
            refused = client.sendmail("spammer@foreign.example",
                                      ["alice@example.com", "user%foreign.example@example.com",
                                       '"user@foreign.example"@example.com', "victim@foreign.example"],
                                      b"Subject: hi\r\n\r\nspam\r\n")
            return refused

    refused = await in_thread(send)
    assert {k: v[0] for k, v in refused.items()} == {
        "user%foreign.example@example.com": 554, '"user@foreign.example"@example.com': 554,
        "victim@foreign.example": 554}
    assert [m.rcpt_tos for m in relay.sink.messages] == [["alice@example.com"]]


async def test_port_25_all_refused_with_smtplib(make_relay):
    relay = await make_relay()

    def send():
        with smtp_client(relay.smtp) as client:
            client.sendmail("spammer@foreign.example", ["victim@foreign.example"], b"Subject: x\r\n\r\nx\r\n")

    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        await in_thread(send)
    assert info.value.recipients["victim@foreign.example"][0] == 554
    assert relay.sink.messages == []


async def test_port_25_unknown_local_recipient(make_relay):
    relay = await make_relay()
    client = await RawClient.connect(relay.smtp)
    await client.cmd("EHLO client.example")
    await client.cmd("MAIL FROM:<someone@foreign.example>")
    code, lines = await client.cmd("RCPT TO:<nobody@example.com>")
    assert (code, lines[-1][4:9]) == (550, "5.1.1")
    code, lines = await client.cmd("RCPT TO:<nobody@example.net>")
    assert (code, lines[-1][4:9]) == (550, "5.1.1")
    for ok in ("<alice@example.com>", "<ALICE@Example.Net>", "<postmaster@example.com>", "<Postmaster>",
               "<bob+lists@example.com>"):
        assert (await client.cmd(f"RCPT TO:{ok}"))[0] == 250, ok
    await client.close()


async def test_port_25_offers_no_auth(make_relay):
    relay = await make_relay(tls=True)
    client = await RawClient.connect(relay.smtp)
    code, lines = await client.cmd("EHLO client.example")
    assert not any("AUTH" in line for line in lines)
    assert any("STARTTLS" in line for line in lines)
    code, lines = await client.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAGFsaWNlLXNlY3JldA==")
    assert (code, lines[-1][4:9]) == (503, "5.5.1")
    await client.cmd("MAIL FROM:<alice@example.com>")
    code, _ = await client.cmd("RCPT TO:<user@foreign.example>")
    assert code == 554
    await client.close()


@pytest.mark.parametrize("listener", ["submission", "smtps"])
async def test_submission_takes_nothing_before_auth(make_relay, listener):
    relay = await make_relay(tls=True)
    client = await RawClient.connect(relay.ports[listener], tls=listener == "smtps")
    await client.cmd("EHLO client.example")
    for form in ("<alice@example.com>", "<user@foreign.example>"):
        code, lines = await client.cmd("MAIL FROM:<alice@example.com>")
        assert (code, lines[-1][4:9]) == (530, "5.7.0")
        code, lines = await client.cmd(f"RCPT TO:{form}")
        assert (code, lines[-1][4:9]) == (530, "5.7.0")
        code, lines = await client.cmd("DATA")
        assert (code, lines[-1][4:9]) == (530, "5.7.0")
    await client.close()
    assert relay.sink.messages == []


@pytest.mark.parametrize("port", ["smtp", "submission"])
async def test_suspended_mailbox_refused_at_rcpt_not_bounced_later(make_relay, port):
    """Mail for a suspended mailbox is refused while the sender is connected
    (no backscatter to a forged sender later); the other recipients go on."""
    relay = await make_relay()

    def send():
        with smtp_client(relay.ports[port]) as client:
            if port == "submission":
                client.login("alice@example.com", PASSWORDS["alice@example.com"])
                sender = "alice@example.com"
            else:
                sender = "someone@foreign.example"
            return client.sendmail(sender, ["carol@example.com", "bob@example.com"], b"Subject: hi\r\n\r\nhi\r\n")

    refused = await in_thread(send)
    assert refused == {"carol@example.com": (550, b"5.2.1 <carol@example.com>: mailbox is disabled")}
    assert [m.rcpt_tos for m in relay.sink.messages] == [["bob@example.com"]]
    assert relay.service.context.metrics.value("relay_rejections_total", reason="mailbox_disabled") == 1
