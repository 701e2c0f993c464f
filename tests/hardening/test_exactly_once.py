"""Exactly-once delivery into the mailstore: a delivery carries a key
(``RCPT TO:<...> XDELIVERY-KEY=...``), the mailstore commits it with the
message, and a repeat (the queue trying again because the ``250`` was lost)
is answered ``250`` with the first copy's UID and stores nothing."""
from __future__ import annotations

import asyncio

from correo_server import deliverykeys

from hardening_support import Raw

MESSAGE = b"From: x@example.org\r\nSubject: once\r\nMessage-ID: <once@example.org>\r\n\r\nhello\r\n"


async def lmtp(port: int) -> Raw:
    client = await Raw.connect(port)
    assert (await client.reply())[0] == 220
    code, lines = await client.cmd("LHLO queue.test")
    assert code == 250
    return client, lines


async def transaction(client: Raw, rcpts: list[tuple[str, str | None]], message: bytes = MESSAGE) -> list[str]:
    """MAIL, RCPT (each with its key), DATA: the replies after the data."""
    assert (await client.cmd("MAIL FROM:<x@example.org>"))[0] == 250
    accepted = 0
    for rcpt, key in rcpts:
        code, lines = await client.cmd(f"RCPT TO:<{rcpt}>" + (f" XDELIVERY-KEY={key}" if key else ""))
        assert code == 250, lines
        accepted += 1
    assert (await client.cmd("DATA"))[0] == 354
    await client.send(message + b".\r\n")
    return [f"{code} {' '.join(lines)}" for code, lines in [await client.reply() for _ in range(accepted)]]


async def inbox(service, address: str) -> list:
    folder = await (await service.ctx.store.mailbox(address)).folder("INBOX")
    return folder.messages()


class TestRepeatedDelivery:
    async def test_the_mailstore_offers_the_extension(self, mailstore):
        _, ports = mailstore
        client, lines = await lmtp(ports["lmtp"])
        assert deliverykeys.EXTENSION in lines
        client.close()

    async def test_a_repeat_is_answered_250_and_not_stored_again(self, mailstore):
        service, ports = mailstore
        key = deliverykeys.delivery_key("Q1", "alice@example.com")
        client, _ = await lmtp(ports["lmtp"])
        first = await transaction(client, [("alice@example.com", key)])
        again = await transaction(client, [("alice@example.com", key)])
        assert first[0].startswith("250 2.0.0 <alice@example.com> delivered (uid 1)")
        assert again == first
        other = await transaction(client, [("alice@example.com", deliverykeys.delivery_key("Q2", "alice@example.com"))])
        assert other[0].startswith("250 2.0.0 <alice@example.com> delivered (uid 2)")
        assert [m.uid for m in await inbox(service, "alice@example.com")] == [1, 2]
        client.close()

    async def test_a_repeat_on_another_connection_while_the_first_is_stored_is_stored_once(self, mailstore):
        service, ports = mailstore
        key = deliverykeys.delivery_key("Q3", "alice@example.com")
        clients = [(await lmtp(ports["lmtp"]))[0] for _ in range(4)]
        replies = await asyncio.gather(*(transaction(c, [("alice@example.com", key)]) for c in clients))
        assert {r[0] for r in replies} == {"250 2.0.0 <alice@example.com> delivered (uid 1)"}
        assert len(await inbox(service, "alice@example.com")) == 1
        for c in clients:
            c.close()

    async def test_an_address_and_its_alias_in_one_transaction_get_one_copy_and_both_keys_count(self, mailstore):
        service, ports = mailstore
        k1, k2 = deliverykeys.delivery_key("Q4", "alice@example.com"), deliverykeys.delivery_key("Q4", "al@example.com")
        client, _ = await lmtp(ports["lmtp"])
        replies = await transaction(client, [("alice@example.com", k1), ("al@example.com", k2)])
        assert all(r.startswith("250") for r in replies)
        assert all(r.startswith("250") for r in await transaction(client, [("al@example.com", k2)]))
        assert len(await inbox(service, "alice@example.com")) == 1
        client.close()

    async def test_a_repeat_into_a_mailbox_the_first_copy_filled_is_not_refused_over_quota(self, mailstore):
        service, ports = mailstore  # bob's quota is 6000 octets
        big = MESSAGE + b"x" * 4000 + b"\r\n"
        key = deliverykeys.delivery_key("Q5", "bob@example.com")
        client, _ = await lmtp(ports["lmtp"])
        assert (await transaction(client, [("bob@example.com", key)], big))[0].startswith("250")
        assert (await transaction(client, [("bob@example.com", key)], big))[0].startswith("250")
        refused = await transaction(client, [("bob@example.com", deliverykeys.delivery_key("Q6", "bob@example.com"))], big)
        assert refused[0].startswith("552 5.2.2")
        assert len(await inbox(service, "bob@example.com")) == 1
        client.close()

    async def test_without_a_key_every_delivery_is_stored_and_a_bad_key_is_refused(self, mailstore):
        service, ports = mailstore
        client, _ = await lmtp(ports["lmtp"])
        await transaction(client, [("alice@example.com", None)])
        await transaction(client, [("alice@example.com", None)])
        assert len(await inbox(service, "alice@example.com")) == 2
        assert (await client.cmd("MAIL FROM:<x@example.org>"))[0] == 250
        code, _ = await client.cmd("RCPT TO:<alice@example.com> XDELIVERY-KEY=../../etc")
        assert code == 501
        client.close()

    async def test_the_key_is_in_the_file_name_and_the_index(self, mailstore):
        service, ports = mailstore
        key = deliverykeys.delivery_key("Q7", "alice@example.com")
        client, _ = await lmtp(ports["lmtp"])
        await transaction(client, [("alice@example.com", key)])
        (msg,) = await inbox(service, "alice@example.com")
        assert f",K={key}" in msg.base
        folder = await (await service.ctx.store.mailbox("alice@example.com")).folder("INBOX")
        assert await folder._run(lambda disk: disk.index.delivered([key])) == {key: msg.uid}
        client.close()


class TestMessageKeys:
    def test_the_same_message_and_envelope_give_the_same_key_whatever_the_recipient_order(self):
        a = deliverykeys.message_key("s@example.org", ["A@example.com", "b@example.com"], MESSAGE)
        b = deliverykeys.message_key("s@example.org", ["b@example.com", "a@example.com"], MESSAGE)
        assert a == b and deliverykeys.valid(a)
        assert deliverykeys.message_key("s@example.org", ["a@example.com"], MESSAGE) != a
        assert deliverykeys.message_key("t@example.org", ["a@example.com", "b@example.com"], MESSAGE) != a
        assert deliverykeys.message_key("s@example.org", ["a@example.com", "b@example.com"], MESSAGE + b"x") != a

    def test_a_message_without_a_message_id_has_no_key(self):
        assert deliverykeys.message_key("s@example.org", ["a@example.com"], b"Subject: x\r\n\r\nbody\r\n") is None
        assert deliverykeys.message_key("s@example.org", ["a@example.com"],
                                        b"Subject: x\r\n\r\nMessage-ID: <in-the-body>\r\n") is None
