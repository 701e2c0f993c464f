"""No backscatter, with the three real services in this process and real
clients: what can be decided at SMTP time is refused there (a full mailbox
at RCPT, a message bigger than the room left, an address forwarding to a
suspended or unknown mailbox), and a sender that failed SPF or DMARC never
gets a notice from the queue, even after a restart; every refusal shows up
by reason in the relay's and the queue's status."""
from __future__ import annotations

import asyncio
import smtplib
import sys
from pathlib import Path

import pytest
from defences_support import message
from stack_support import PASSWORD, default_mailboxes, entry, start_stack, with_filter

sys.path.insert(0, str(Path(__file__).parent.parent / "relay"))
from relay_helpers import in_thread  # noqa: E402

from correo_server.mailstore.junk import verdict_of  # noqa: E402
from correo_server.mailstore.rules.verdict import scan_verdict  # noqa: E402
from correo_server.sieve.message import MessageView  # noqa: E402
from correo_server.queue.service import QueueService  # noqa: E402


def talk(port: int, sender: str, rcpts: list[str], msg: bytes, *, size: bool = True,
         login: str | None = None) -> dict:
    """One SMTP transaction; what the server said: ``rcpt`` (address → (code,
    text)) and ``data`` ((code, text) or None when no recipient was taken)."""
    out: dict = {"rcpt": {}, "data": None}
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.good.example", timeout=30) as client:
        client.ehlo()
        if login:
            client.login(login, PASSWORD)
        code, text = client.mail(sender, [f"SIZE={len(msg)}"] if size else [])
        out["mail"] = (code, text.decode())
        if code != 250:
            return out
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            out["rcpt"][rcpt] = (code, text.decode())
        if any(c == 250 for c, _ in out["rcpt"].values()):
            code, text = client.data(msg)
            out["data"] = (code, text.decode())
    return out


@pytest.fixture
def world(zone):
    zone.txt("good.example", "v=spf1 ip4:127.0.0.0/8 -all")
    zone.txt("forged.example", "v=spf1 ip4:192.0.2.1 -all")  # 127.0.0.1 may not send for it
    zone.txt("_dmarc.forged.example", "v=DMARC1; p=none")
    zone.txt("quarantine.example", "v=spf1 ip4:192.0.2.1 -all")
    zone.txt("_dmarc.quarantine.example", "v=DMARC1; p=quarantine")
    return zone


@pytest.fixture
async def stack(tmp_path, zone):
    started = []

    async def make(**kw):
        s = await start_stack(tmp_path / f"s{len(started)}", zone.port, **kw)
        started.append(s)
        return s

    yield make
    for s in started:
        await s.stop()


async def fill(stack, address: str, octets: int) -> None:
    """Put ``octets`` of mail in a mailbox, through submission (no relay-side room check yet)."""
    body = ("x" * 76 + "\r\n") * (octets // 78)
    got = await in_thread(talk, stack.submission, "alice@example.com", [address],
                          message("alice@example.com", to=address, body=body), login="alice@example.com")
    assert got["data"][0] == 250, got
    await stack.until(lambda: stack.folder_count(address, "INBOX"), what="the filler delivered")


async def test_a_full_mailbox_is_refused_at_rcpt_and_nothing_bounces(world, stack):
    s = await stack()
    await s.add_mx(world, "good.example", "127.0.0.2")
    await fill(s, "bob@example.com", 20_000)
    # The administrator lowers bob's quota under what he keeps: his mailbox is full.
    s.set_mailboxes([e for e in default_mailboxes() if e.name != "bob"] + [entry("bob", quota_bytes=10_000)])
    await s.sync()
    got = await in_thread(talk, s.smtp, "someone@good.example", ["bob@example.com", "alice@example.com"],
                          message("someone@good.example"))
    assert got["rcpt"]["bob@example.com"][0] == 452
    assert got["rcpt"]["bob@example.com"][1].startswith("4.2.2 <bob@example.com>: Mailbox is full")
    assert got["rcpt"]["alice@example.com"][0] == 250 and got["data"][0] == 250  # the others are not held up
    await s.until(lambda: s.folder_count("alice@example.com", "INBOX"), what="alice's copy")
    await s.sync()
    relay = (await s.http("relay", "/status"))["refused"]["example.com"]
    assert relay["byReason"] == {"quota": 1} and relay["last"]["recipient"] == "bob@example.com"
    assert relay["last"]["reply"].startswith("452 4.2.2")
    async def queue_counts():
        return (await s.http("queue", "/status"))["refusals"].get("example.com", {}).get("byReason") == {"quota": 1}
    await s.until(queue_counts, what="the queue to add the relay's report up")
    assert s.mx["good.example"].messages == []  # no notice went anywhere


async def test_a_message_bigger_than_the_room_left_is_refused_at_rcpt_with_size_else_at_data(world, stack):
    s = await stack()
    await fill(s, "bob@example.com", 20_000)
    await s.sync()
    big = message("someone@good.example", body=("y" * 76 + "\r\n") * 300)  # ~23 kB: more than the room left
    with_size = await in_thread(talk, s.smtp, "someone@good.example", ["bob@example.com"], big)
    code, text = with_size["rcpt"]["bob@example.com"]
    assert code == 552 and text.startswith("5.2.2 <bob@example.com>: Message is larger than the room left")
    without = await in_thread(talk, s.smtp, "someone@good.example", ["bob@example.com"], big, size=False)
    assert without["rcpt"]["bob@example.com"][0] == 250
    assert without["data"][0] == 552 and without["data"][1].startswith("5.2.2 <bob@example.com>")
    small = await in_thread(talk, s.smtp, "someone@good.example", ["bob@example.com"], message("someone@good.example"))
    assert small["data"][0] == 250  # what fits still gets in


async def test_the_mailstores_own_delay_setting_decides_the_code(world, stack):
    s = await stack(over_quota="defer")
    await fill(s, "bob@example.com", 20_000)
    await s.sync()
    got = await in_thread(talk, s.smtp, "someone@good.example", ["bob@example.com"],
                          message("someone@good.example", body=("y" * 76 + "\r\n") * 300))
    assert got["rcpt"]["bob@example.com"][0] == 452 and got["rcpt"]["bob@example.com"][1].startswith("4.2.2")


async def test_addresses_forwarding_to_a_suspended_or_unknown_mailbox_are_refused_at_rcpt(world, stack):
    s = await stack()
    got = await in_thread(talk, s.smtp, "someone@good.example",
                          ["erin@example.com", "gina@example.com", "frank@example.com", "alice@example.com"],
                          message("someone@good.example"))
    assert got["rcpt"]["erin@example.com"] == (
        550, "5.2.1 <erin@example.com>: Recipient address rejected: it forwards to a mailbox that is disabled")
    assert got["rcpt"]["gina@example.com"] == (
        550, "5.1.1 <gina@example.com>: Recipient address rejected: it forwards to an address that does not exist")
    assert got["rcpt"]["frank@example.com"][0] == 550  # suspended itself: the relay's usual refusal
    assert got["data"][0] == 250
    await s.sync()
    assert (await s.http("relay", "/status"))["refused"]["example.com"]["byReason"] == {"recipient": 3}


async def test_no_notice_for_a_sender_that_failed_spf_even_after_a_restart(world, stack):
    s = await stack(filter=with_filter(reject_spf_fail=False))  # SPF fail is let through to DMARC (p=none)
    forged_mx = await s.add_mx(world, "forged.example", "127.0.0.2")
    good_mx = await s.add_mx(world, "good.example", "127.0.0.3")
    far = await s.add_mx(world, "far.test", "127.0.0.4", refuse="550 5.1.1 <dave@far.test>: no such user")
    # carol forwards to dave@far.test, which refuses: the message bounces.
    forged = await in_thread(talk, s.smtp, "victim@forged.example", ["carol@example.com"],
                             message("victim@forged.example", to="carol@example.com", subject="forged"))
    honest = await in_thread(talk, s.smtp, "someone@good.example", ["carol@example.com"],
                             message("someone@good.example", to="carol@example.com", subject="honest"))
    assert forged["data"][0] == 250 and honest["data"][0] == 250
    await s.until(lambda: good_mx.messages, what="the honest sender's failure notice")
    [(sender, rcpts, notice)] = good_mx.messages
    assert sender in ("", "<>") and rcpts == ["someone@good.example"] and b"dave@far.test" in notice
    await s.queue.runner.idle()
    assert forged_mx.messages == []  # no backscatter to the forged sender
    metrics = await s.text("queue", "/metrics")
    assert 'correo_queue_notices_suppressed_total{reason="spf"} 1' in metrics
    assert far.messages == []
    # The verdict is on disk with the message: a restart does not forget it.
    far.refuse = "451 4.3.0 try later"
    again = await in_thread(talk, s.smtp, "victim@forged.example", ["carol@example.com"],
                            message("victim@forged.example", to="carol@example.com", subject="forged 2"))
    assert again["data"][0] == 250
    await s.until(lambda: any(m.env.unverified == "spf" and any(r.attempt_count for r in m.rcpts)
                              for m in s.queue.state), what="a deferred attempt")
    await s.queue.stop(grace=1.0)
    far.refuse = "550 5.1.1 <dave@far.test>: gone now"
    s.queue = QueueService(s.cfg, str(s.root / "config"), linger=0.2)
    await s.queue.start()
    [msg] = [m for m in s.queue.state if m.env.unverified]
    await s.queue.runner.retry_all()
    await s.until(lambda: s.queue.state.get(msg.id) is None, what="the bounce to be settled")
    assert forged_mx.messages == []
    assert 'correo_queue_notices_suppressed_total{reason="spf"} 1' in await s.text("queue", "/metrics")


async def test_dmarc_quarantine_files_the_message_into_junk(world, stack):
    s = await stack()
    # The envelope sender passes SPF; the From: domain's DMARC fails (nothing aligned) and says quarantine.
    msg = (b"From: The Boss <boss@quarantine.example>\r\nTo: alice@example.com\r\nSubject: wire the money\r\n"
           b"Message-ID: <q1@quarantine.example>\r\n\r\nUrgent.\r\n")
    got = await in_thread(talk, s.smtp, "bounces@good.example", ["alice@example.com"], msg)
    assert got["data"][0] == 250
    await s.until(lambda: s.folder_count("alice@example.com", "Junk"), what="the message in Junk")
    assert await s.folder_count("alice@example.com", "INBOX") == 0
    assert (await s.http("mailstore", "/status"))["mailboxes"]["alice@example.com"]["junk"] == 1
    # The mail rules see the same verdict.
    mbox = await s.mailstore.ctx.store.mailbox("alice@example.com")
    folder = await mbox.folder("Junk")
    [uid] = folder.uids()
    data = await folder.read(uid)
    assert verdict_of(data).junk and b"dmarc=fail" in data
    seen = scan_verdict(MessageView(data))  # what Sieve's spamtest sees: certainly spam
    assert seen.spam_score == seen.spam_max


QUARANTINED = (b"From: The Boss <boss@quarantine.example>\r\nTo: alice@example.com\r\nSubject: %s\r\n"
               b"Message-ID: <%s@quarantine.example>\r\n\r\nUrgent.\r\n")


async def test_junk_filing_composes_with_the_mailbox_rules(world, stack):
    # alice files invoices herself, and asks for a copy of anything spamtest calls certain spam in "Review".
    rules = ('require ["fileinto", "mailbox", "spamtest", "relational", "comparator-i;ascii-numeric"];\n'
             'if header :contains "subject" "invoice" { fileinto :create "Invoices"; stop; }\n'
             'if spamtest :value "ge" :comparator "i;ascii-numeric" "10" { fileinto :create "Review"; keep; }\n')
    mailboxes = [entry("alice", sieve=rules)] + [e for e in default_mailboxes() if e.name != "alice"]
    s = await stack(mailboxes=mailboxes)
    for subject, ident in ((b"invoice 42", b"q2"), (b"wire the money", b"q3")):
        got = await in_thread(talk, s.smtp, "bounces@good.example", ["alice@example.com"], QUARANTINED % (subject, ident))
        assert got["data"][0] == 250
    # Her explicit fileinto wins; her script's other copy goes where it says, and the keep of junk goes to Junk.
    await s.until(lambda: s.folder_count("alice@example.com", "Invoices"), what="the invoice in Invoices")
    await s.until(lambda: s.folder_count("alice@example.com", "Junk"), what="the quarantined message in Junk")
    assert await s.folder_count("alice@example.com", "Review") == 1
    assert await s.folder_count("alice@example.com", "INBOX") == 0
    assert await s.folder_count("alice@example.com", "Junk") == 1
    assert (await s.http("mailstore", "/status"))["mailboxes"]["alice@example.com"]["junk"] == 1
    # Clean mail under the same rules stays in INBOX.
    clean = await in_thread(talk, s.smtp, "someone@good.example", ["alice@example.com"], message("someone@good.example"))
    assert clean["data"][0] == 250
    await s.until(lambda: s.folder_count("alice@example.com", "INBOX"), what="the clean message in INBOX")


def test_with_mailstore_shards_the_relay_asks_each_shard_and_a_full_mailbox_on_any_of_them_counts():
    import dataclasses
    import time

    from correo_server import config as cfgmod
    from correo_server.backscatter.checks import RecipientChecks
    from correo_server.directory import Directory

    shards = (cfgmod.MailstoreShard(host="ms-0.mail.svc", http=8083), cfgmod.MailstoreShard(host="127.0.0.1", http=9100))
    base = cfgmod.ServerConfig(name="t", hostname="mx.example.com", domains=(cfgmod.Domain("example.com"),))
    cfg = dataclasses.replace(base, relay=dataclasses.replace(base.relay, mailstore_http=cfgmod.Listen("0.0.0.0", 8083)),
                              mailstore=dataclasses.replace(base.mailstore, shards=shards))
    checks = RecipientChecks.from_config(cfg)
    views = checks.view.views
    assert [v.url.partition("/quota")[0] for v in views] == ["http://ms-0.mail.svc:8083", "http://127.0.0.1:9100"]
    # What each shard's /quota said at its last poll: each lists the mailboxes it holds.
    now = time.monotonic()
    views[0].room, views[0].fetched_at = {"alice@example.com": 0}, now
    views[1].room, views[1].fetched_at = {"bob@example.com": 9000}, now
    directory = Directory([entry("alice"), entry("bob"), entry("carol")])
    full = checks.at_rcpt(directory, "alice@example.com", None)
    assert full is not None and full[0].code == 452 and str(full[0]).startswith("452 4.2.2")
    big = checks.at_rcpt(directory, "bob@example.com", 20000)
    assert big is not None and big[0].code == 552
    assert checks.at_rcpt(directory, "bob@example.com", 100) is None
    assert checks.at_rcpt(directory, "carol@example.com", 5000) is None  # nearly empty: no shard lists her
