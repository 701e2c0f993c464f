"""Outbound delivery: MX hosts from the loopback DNS in preference order,
fallbacks, bounces, STARTTLS, connection reuse, concurrency, the smarthost and
the mailstore's per-recipient replies."""
from __future__ import annotations

import asyncio

import pytest
from queue_support import HOSTNAME, SinkHandler, message, start_smtp
from queue_reports import check_fields, parse_report

from correo_server.config import Smarthost
from correo_server.queue.records import BOUNCED, DEFERRED
from correo_server.wire.client import Connection
from correo_server.wire.data import wire_data


def the_message(h):
    (msg,) = list(h.service.state)
    return msg


async def two_mx(h):
    h.zone.mx("remote.test", (10, "mx1.remote.test"), (20, "mx2.remote.test"))
    mx1 = await h.add_mx("mx1.remote.test", "127.0.0.2")
    mx2 = await h.add_mx("mx2.remote.test", "127.0.0.3")
    return mx1, mx2


async def test_delivery_goes_to_the_preferred_mx(harness):
    mx1, mx2 = await two_mx(harness)
    await harness.start()
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()
    assert [m.recipients for m in mx1.messages] == [["bob@remote.test"]]
    assert mx1.messages[0].sender == "alice@example.com"
    assert mx1.messages[0].helo == HOSTNAME  # EHLO with the configured hostname
    assert not mx2.messages
    assert not list(harness.service.state)


async def test_falls_back_to_the_next_mx_when_the_first_refuses_connections(harness):
    harness.zone.mx("remote.test", (10, "mx1.remote.test"), (20, "mx2.remote.test"))
    harness.zone.a("mx1.remote.test", "127.0.0.4")  # nothing listens there
    mx2 = await harness.add_mx("mx2.remote.test", "127.0.0.3")
    await harness.start()
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()
    assert [m.recipients for m in mx2.messages] == [["bob@remote.test"]]


async def test_falls_back_to_the_next_mx_on_4xx(harness):
    mx1, mx2 = await two_mx(harness)
    mx1.rcpt_reply = "451 4.3.2 try another server"
    await harness.start()
    await harness.send("alice@example.com", ["bob@remote.test", "carl@remote.test"])
    await harness.settle()
    assert not mx1.messages
    assert [m.recipients for m in mx2.messages] == [["bob@remote.test", "carl@remote.test"]]


async def test_4xx_everywhere_is_deferred_then_delivered_on_retry(harness):
    harness.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await harness.add_mx("mx1.remote.test", "127.0.0.2")
    mx1.rcpt_reply = "451 4.7.1 greylisted, come back later"
    await harness.start()
    t0 = harness.clock.now()
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()
    r = the_message(harness).rcpts[0]
    assert r.state == DEFERRED
    assert r.reply == "451 4.7.1 greylisted, come back later"
    assert r.next_attempt == t0 + 300  # the domain's initial delay
    assert r.destination == "mx1.remote.test"
    mx1.rcpt_reply = None
    await harness.run_until(t0 + 299)
    assert not mx1.messages  # not before its time
    await harness.run_until(t0 + 300)
    assert [m.recipients for m in mx1.messages] == [["bob@remote.test"]]
    assert not list(harness.service.state)
    assert not harness.notices("alice@example.com")  # no notice for a short delay


async def test_5xx_bounces_at_once_with_a_failure_notice_to_the_local_sender(harness):
    harness.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await harness.add_mx("mx1.remote.test", "127.0.0.2")
    mx1.rcpt_reply = lambda rcpt: "550 5.1.1 <nobody@remote.test>: no such user" if rcpt.startswith("nobody") else None
    await harness.start()
    await harness.send("alice@example.com", ["nobody@remote.test", "bob@remote.test"],
                       message("lunch", to="nobody@remote.test"))
    await harness.settle()
    assert [m.recipients for m in mx1.messages] == [["bob@remote.test"]]
    (notice,) = harness.notices("alice@example.com")
    report = parse_report(notice)
    check_fields(report, hostname=HOSTNAME, action="failed")
    (rcpt,) = report.per_recipient
    assert rcpt["Final-Recipient"] == "rfc822; nobody@remote.test"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Remote-MTA"] == "dns; mx1.remote.test"
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 <nobody@remote.test>: no such user"
    assert "Subject: lunch" in report.headers
    assert [a.addr_spec for a in notice["To"].addresses] == ["alice@example.com"]
    assert notice["Subject"] == "Undelivered Mail Returned to Sender"
    assert not list(harness.service.state)  # bounced, reported, gone


async def test_null_mx_bounces_at_once(harness):
    harness.zone.null_mx("nomail.test")
    await harness.start()
    await harness.send("alice@example.com", ["x@nomail.test"])
    await harness.settle()
    (notice,) = harness.notices("alice@example.com")
    (rcpt,) = parse_report(notice).per_recipient
    assert rcpt["Status"] == "5.1.10"
    assert rcpt["Diagnostic-Code"].startswith("smtp; 556 5.1.10")
    assert harness.service.state.figures.total.bounced == 1


async def test_domain_without_mx_is_delivered_to_its_a_record(harness):
    plain = SinkHandler("plain.test")
    harness.servers.append(await start_smtp(plain, "127.0.0.5", harness.remote_port))
    harness.zone.a("plain.test", "127.0.0.5")
    await harness.start()
    await harness.send("alice@example.com", ["x@plain.test"])
    await harness.settle()
    assert [m.recipients for m in plain.messages] == [["x@plain.test"]]


async def test_domain_that_does_not_exist_bounces(harness):
    await harness.start()
    await harness.send("alice@example.com", ["x@nowhere.test"])
    await harness.settle()
    (notice,) = harness.notices("alice@example.com")
    (rcpt,) = parse_report(notice).per_recipient
    assert rcpt["Status"] == "5.1.2"


async def test_dns_server_failure_is_temporary(harness):
    harness.zone.servfail.add("flaky.test")
    await harness.start()
    t0 = harness.clock.now()
    await harness.send("alice@example.com", ["x@flaky.test"])
    await harness.settle()
    r = the_message(harness).rcpts[0]
    assert r.state == DEFERRED and r.reply.startswith("451 4.4.3"), r.reply
    harness.zone.servfail.clear()
    harness.zone.mx("flaky.test", (5, "mx1.remote.test"))
    mx1 = await harness.add_mx("mx1.remote.test", "127.0.0.2")
    await harness.run_until(t0 + 300)
    assert [m.recipients for m in mx1.messages] == [["x@flaky.test"]]


async def test_dns_timeout_is_temporary(harness):
    harness.zone.silent.add("slow.test")
    await harness.start(connect_timeout_seconds=1)
    await harness.send("alice@example.com", ["x@slow.test"])
    await harness.settle()
    r = the_message(harness).rcpts[0]
    assert r.state == DEFERRED and r.reply.startswith("451 4.4.3") and "timed out" in r.reply, r.reply


async def test_starttls_is_used_when_the_mx_offers_it(harness, server_tls):
    harness.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await harness.add_mx("mx1.remote.test", "127.0.0.2", tls=server_tls)
    await harness.start()
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()
    assert [m.tls for m in mx1.messages] == [True]


async def test_a_failed_tls_handshake_falls_back_to_plain_text(harness, server_tls, tmp_path):
    import ssl

    from queue_support import make_cert
    cert, key = make_cert(tmp_path)
    demanding = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    demanding.load_cert_chain(str(cert), str(key))
    demanding.verify_mode = ssl.CERT_REQUIRED  # wants a client certificate the queue does not have
    demanding.load_verify_locations(str(cert))
    harness.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await harness.add_mx("mx1.remote.test", "127.0.0.2", tls=demanding)
    await harness.start()
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()
    assert [(m.recipients, m.tls) for m in mx1.messages] == [(["bob@remote.test"], False)]


async def test_one_connection_carries_many_messages(harness):
    harness.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await harness.add_mx("mx1.remote.test", "127.0.0.2")
    await harness.start(concurrency_per_destination=1)
    await asyncio.gather(*(harness.send("alice@example.com", [f"u{i}@remote.test"]) for i in range(6)))
    await harness.settle()
    assert len(mx1.messages) == 6
    assert mx1.connections == 1


async def test_concurrency_per_destination_is_limited(harness):
    harness.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await harness.add_mx("mx1.remote.test", "127.0.0.2")
    active = {"now": 0, "max": 0}
    real = mx1.handle_DATA

    async def slow(server, session, envelope):
        active["now"] += 1
        active["max"] = max(active["max"], active["now"])
        await asyncio.sleep(0.1)
        active["now"] -= 1
        return await real(server, session, envelope)

    mx1.handle_DATA = slow
    await harness.start(concurrency_per_destination=2, concurrency_total=10)
    await asyncio.gather(*(harness.send("alice@example.com", [f"u{i}@remote.test"]) for i in range(8)))
    await harness.settle()
    assert len(mx1.messages) == 8
    assert active["max"] == 2


async def test_total_concurrency_is_limited(harness):
    seen = {"now": 0, "max": 0}
    for n in range(4):
        domain = f"d{n}.test"
        harness.zone.mx(domain, (10, f"mx.{domain}"))
        mx = await harness.add_mx(f"mx.{domain}", f"127.0.0.{10 + n}")
        real = mx.handle_DATA

        async def slow(server, session, envelope, real=real):
            seen["now"] += 1
            seen["max"] = max(seen["max"], seen["now"])
            await asyncio.sleep(0.1)
            seen["now"] -= 1
            return await real(server, session, envelope)

        mx.handle_DATA = slow
    await harness.start(concurrency_per_destination=4, concurrency_total=3)
    await asyncio.gather(*(harness.send("alice@example.com", [f"u{i}@d{i % 4}.test"]) for i in range(12)))
    await harness.settle()
    assert sum(len(mx.messages) for mx in harness.mx.values()) == 12
    assert seen["max"] == 3


async def test_local_delivery_is_limited_by_the_total_only(harness):
    """The mailstore is every hosted mailbox, not one destination: local mail
    gets as many workers as the total allows."""
    seen = {"now": 0, "max": 0}
    real = harness.mailstore.handle_DATA

    async def slow(server, session, envelope):
        seen["now"] += 1
        seen["max"] = max(seen["max"], seen["now"])
        await asyncio.sleep(0.1)
        seen["now"] -= 1
        return await real(server, session, envelope)

    harness.mailstore.handle_DATA = slow
    await harness.start(concurrency_per_destination=2, concurrency_total=5)
    await asyncio.gather(*(harness.send(f"x{i}@remote.test", ["bob@example.com"]) for i in range(12)))
    await harness.settle()
    assert len(harness.mailstore.for_rcpt("bob@example.com")) == 12
    assert seen["max"] == 5


@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
async def test_smarthost_with_auth(harness, server_tls, tls):
    relay = SinkHandler("smarthost.test")
    server = await start_smtp(relay, "127.0.0.1", 0, auth={"relayuser": "s3cret"},
                              tls=server_tls if tls != "none" else None, implicit_tls=tls == "implicit")
    harness.servers.append(server)
    port = server.sockets[0].getsockname()[1]
    (harness.root / "config").mkdir(exist_ok=True)
    (harness.root / "config" / "smarthost-user").write_text("relayuser\n")
    (harness.root / "config" / "smarthost-pass").write_text("s3cret\n")
    await harness.start(smarthost=Smarthost(host="127.0.0.1", port=port, tls=tls, username_file="smarthost-user",
                                            password_file="smarthost-pass"))
    await harness.send("alice@example.com", ["x@remote.test", "bob@example.com"])
    await harness.settle()
    assert [(m.recipients, m.login) for m in relay.messages] == [(["x@remote.test"], "relayuser")]
    if tls == "starttls":
        assert relay.messages[0].tls
    assert harness.mailstore.for_rcpt("bob@example.com")  # local mail does not go to the smarthost


async def test_smarthost_refusing_the_login_keeps_the_mail(harness):
    relay = SinkHandler("smarthost.test")
    server = await start_smtp(relay, "127.0.0.1", 0, auth={"relayuser": "other"})
    harness.servers.append(server)
    port = server.sockets[0].getsockname()[1]
    (harness.root / "config").mkdir(exist_ok=True)
    (harness.root / "config" / "u").write_text("relayuser")
    (harness.root / "config" / "p").write_text("wrong")
    await harness.start(smarthost=Smarthost(host="127.0.0.1", port=port, tls="none", username_file="u",
                                            password_file="p"))
    await harness.send("alice@example.com", ["x@remote.test"])
    await harness.settle()
    r = the_message(harness).rcpts[0]
    assert r.state == DEFERRED
    assert "authentication at smarthost 127.0.0.1 failed" in r.reply
    assert r.destination == f"127.0.0.1:{port}"


async def test_mailstore_replies_per_recipient_are_honoured(harness):
    harness.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await harness.add_mx("mx1.remote.test", "127.0.0.2")
    harness.mailstore.per_rcpt = {
        "erin@other.org": "452 4.2.2 <erin@other.org> mailbox full, try later",
        "alice@example.com": "552 5.2.2 <alice@example.com> over quota",
    }.get
    await harness.start()
    await harness.send("x@remote.test", ["bob@example.com", "erin@other.org", "alice@example.com"])
    await harness.settle()
    assert [r for r, _ in harness.mailstore.delivered] == ["bob@example.com"]
    states = {r.rcpt.address: r.state for r in the_message(harness).rcpts}
    assert states == {"bob@example.com": "delivered", "erin@other.org": DEFERRED, "alice@example.com": BOUNCED}
    # The remote sender hears about alice through its MX, from <>.
    (notice,) = mx1.messages
    assert notice.sender == "<>" and notice.recipients == ["x@remote.test"]
    (rcpt,) = parse_report(notice.parsed()).per_recipient
    assert rcpt["Final-Recipient"] == "rfc822; alice@example.com"
    assert rcpt["Status"] == "5.2.2"


async def test_mailstore_down_is_temporary_and_mail_flows_when_it_is_back(harness):
    await harness.start()
    harness.servers[0].close()  # the mailstore sink
    await harness.servers[0].wait_closed()
    t0 = harness.clock.now()
    await harness.send("x@remote.test", ["bob@example.com"])
    await harness.settle()
    r = the_message(harness).rcpts[0]
    assert r.state == DEFERRED and r.reply.startswith("451 4.4.1 connect to mailstore")
    assert r.destination == "mailstore"
    harness.servers[0] = await start_smtp(harness.mailstore, "127.0.0.1", harness.mailstore_port, lmtp=True)
    await harness.run_until(t0 + 300)
    assert [r for r, _ in harness.mailstore.delivered] == ["bob@example.com"]


async def test_internationalised_addresses_go_out_with_smtputf8(harness):
    harness.zone.mx("xn--exmple-cua.test", (10, "mx1.remote.test"))
    mx1 = await harness.add_mx("mx1.remote.test", "127.0.0.2")
    await harness.start()
    replies = await harness.send("alice@example.com", ["jürgen@exämple.test"],
                                 message(to="jürgen@exämple.test", body="Grüße\n"))
    assert all(r.startswith("250") for r in replies.values()), replies
    await harness.settle()
    (got,) = mx1.messages
    assert got.recipients == ["jürgen@exämple.test"]
    assert "Grüße".encode() in got.data


async def test_internationalised_address_to_a_server_without_smtputf8_bounces(harness):
    harness.zone.mx("xn--exmple-cua.test", (10, "mx1.remote.test"))
    mx1 = await harness.add_mx("mx1.remote.test", "127.0.0.2", smtputf8=False)
    await harness.start()
    await harness.send("alice@example.com", ["jürgen@exämple.test"])
    await harness.settle()
    assert not mx1.messages
    (notice,) = harness.notices("alice@example.com")
    (rcpt,) = parse_report(notice).per_recipient
    assert rcpt["Status"] == "5.6.7"


async def test_connection_lost_after_the_data_is_retried_later_not_sent_elsewhere_at_once(harness):
    mx1, mx2 = await two_mx(harness)
    real = mx1.handle_DATA

    async def vanish(server, session, envelope):
        await real(server, session, envelope)
        server.transport.close()  # the message arrived, the 250 never does
        return "250 2.0.0 Ok"

    mx1.handle_DATA = vanish
    await harness.start()
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()
    assert len(mx1.messages) == 1 and not mx2.messages
    r = the_message(harness).rcpts[0]
    assert r.state == DEFERRED and r.reply.startswith("451 4.4.2")


class ScriptedServer:
    """A raw SMTP/LMTP server that offers PIPELINING, answers each command
    from a script and records every read: what the queue puts on the wire."""

    def __init__(self, replies: dict[str, str], *, lmtp: bool = False) -> None:
        self.replies = replies
        self.lmtp = lmtp
        self.reads: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    async def _serve(self, reader, writer) -> None:
        writer.write(b"220 mx.test ESMTP\r\n")
        rcpts = 0
        while chunk := await reader.read(65536):
            self.reads.append(chunk)
            out = []
            for line in chunk.split(b"\r\n")[:-1]:
                verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper().decode(errors="replace")
                if verb in ("EHLO", "LHLO"):
                    out.append("250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME")
                elif verb == "MAIL":
                    rcpts = 0
                if verb in self.replies:
                    out.append(self.replies[verb])
                    rcpts += verb == "RCPT" and self.replies[verb].startswith("2")
                elif verb in ("RSET", "QUIT"):
                    out.append("250 2.0.0 ok" if verb == "RSET" else "221 2.0.0 bye")
                elif line == b".":
                    out.extend(["250 2.0.0 stored"] * (rcpts if self.lmtp else 1))
            if out:
                writer.write(("\r\n".join(out) + "\r\n").encode())

    async def connect(self) -> Connection:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        conn = await Connection.open("mx.test", "127.0.0.1", port, connect_timeout=5, timeout=5)
        await conn.hello("queue.test", lmtp=self.lmtp)
        return conn

    def close(self) -> None:
        assert self.server is not None
        self.server.close()


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
async def test_mail_rcpt_and_data_go_out_in_one_write_when_pipelining_is_offered(lmtp):
    server = ScriptedServer({"MAIL": "250 2.1.0 ok", "RCPT": "250 2.1.5 ok", "DATA": "354 go on"}, lmtp=lmtp)
    conn = await server.connect()
    try:
        replies = (await conn.transaction("a@example.com", ["x@remote.test", "y@remote.test"],
                                          wire_data(b"Subject: s\r\n\r\nbody\r\n"), size=20)).replies
    finally:
        await conn.quit()
        server.close()
    assert [r.code for r in replies] == [250, 250]
    group = next(r for r in server.reads if r.startswith(b"MAIL"))
    assert group.split(b"\r\n")[1:4] == [b"RCPT TO:<x@remote.test>", b"RCPT TO:<y@remote.test>", b"DATA"]
    assert conn.payload_sent


async def test_a_server_that_says_354_after_refusing_every_recipient_gets_no_message():
    server = ScriptedServer({"MAIL": "250 2.1.0 ok", "RCPT": "550 5.1.1 unknown", "DATA": "354 go on"})
    conn = await server.connect()
    try:
        replies = (await conn.transaction("a@example.com", ["x@remote.test"], wire_data(b"Subject: secret\r\n\r\n"),
                                          size=20)).replies
        await asyncio.sleep(0.05)
    finally:
        server.close()
    assert [str(r) for r in replies] == ["550 5.1.1 unknown"]
    assert not conn.payload_sent and conn.closed  # hung up instead of sending the data
    assert not any(b"secret" in r for r in server.reads)


async def test_a_refused_sender_with_pipelining_resets_and_keeps_the_connection():
    server = ScriptedServer({"MAIL": "451 4.3.0 try later", "RCPT": "503 5.5.1 need MAIL", "DATA": "503 5.5.1 no"})
    conn = await server.connect()
    try:
        replies = (await conn.transaction("a@example.com", ["x@remote.test", "y@remote.test"], wire_data(b"x\r\n"),
                                          size=3)).replies
        assert [r.code for r in replies] == [451, 451]
        assert not conn.closed and not conn.payload_sent
    finally:
        await conn.quit()
        server.close()
    assert any(r.startswith(b"RSET") for r in server.reads)
