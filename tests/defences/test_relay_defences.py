"""The defences in the running relay on port 25, driven by real clients
(smtplib, swaks): SPF at MAIL FROM, DNSBL at RCPT, DKIM/DMARC/own-domain and
rspamd at the end of DATA; authenticated submission is not checked.  The
relay hands accepted mail to a recording LMTP sink playing the queue; DNS is
the loopback server, rspamd the real one."""
from __future__ import annotations

import shutil
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest
from defences_support import GTUBE, message

from correo_server import directory as dirmod
from correo_server import passwords
from correo_server.config import AuthSettings, Domain, Listen, RelayConfig, ServerConfig
from correo_server.defences import DefenceSettings, Defences
from correo_server.directory import MailboxEntry
from correo_server.mailauth import headers
from correo_server.relay.service import RelayService
from correo_server.scanning.dnsbl import DnsblSettings, DnsblZone, query_name
from correo_server.scanning.rspamd import RspamdSettings

sys.path.insert(0, str(Path(__file__).parent.parent / "relay"))
from relay_helpers import LMTPSink, in_thread  # noqa: E402

HOSTNAME = "mx.example.com"
PASSWORD = "alice-secret"
LOCAL = Listen("127.0.0.1", 0)


@pytest.fixture
def world(zone):
    """Sender domains for a client at 127.0.0.1, the loopback address the tests connect from."""
    zone.txt("good.example", "v=spf1 ip4:127.0.0.0/8 -all")
    zone.txt("_dmarc.good.example", "v=DMARC1; p=reject")
    zone.txt("liar.example", "v=spf1 ip4:192.0.2.1 -all")
    zone.txt("soft.example", "v=spf1 ~all")
    zone.txt("_dmarc.soft.example", "v=DMARC1; p=quarantine")
    return zone


@pytest.fixture
async def relay(tmp_path, resolver, rspamd):
    """``await relay(dnsbl=[...], rspamd=True)``: a relay with the defences on port 25."""
    sink = LMTPSink()
    await sink.start()
    started = []

    async def make(*, dnsbl=(), scan=True):
        config_dir = tmp_path / f"relay{len(started)}"
        config_dir.mkdir()
        entry = MailboxEntry("alice@example.com", name="alice",
                             password_hash=passwords.hash_password(PASSWORD, passwords.stable_salt("t", "alice")))
        (config_dir / "directory.yaml").write_text(dirmod.dump([entry, MailboxEntry("bob@example.com")]))
        config = ServerConfig(
            name="test", hostname=HOSTNAME,
            domains=(Domain("example.com", aliases=("example.net",), hostname=HOSTNAME),),
            auth=AuthSettings(failure_delay_seconds=0.01),
            relay=RelayConfig(smtp=LOCAL, submission=LOCAL, smtps=LOCAL, http=LOCAL,
                              queue=Listen("127.0.0.1", sink.port)),
            base_dir=str(config_dir))
        settings = DefenceSettings(dnsbl=DnsblSettings(tuple(DnsblZone(z) for z in dnsbl)),
                                   rspamd=RspamdSettings(rspamd.url) if scan else None)
        defences = Defences(resolver, HOSTNAME, lambda d: config.is_hosted(d), settings, rng=lambda: 0.0)
        service = RelayService(config, str(config_dir), handoff_timeout=5.0, grace=1.0, defences=defences)
        ports = await service.start()
        started.append(service)
        return ports, sink

    yield make
    for service in started:
        await service.stop()
    await sink.stop()


def send(port: int, sender: str, msg: bytes, rcpt: str = "bob@example.com", *, login: bool = False):
    """Send one message; the refusal as (code, text), or None when accepted."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.good.example", timeout=30) as client:
        client.ehlo()
        if login:
            client.login("alice@example.com", PASSWORD)
        try:
            client.sendmail(sender, [rcpt], msg)
        except smtplib.SMTPSenderRefused as exc:
            return exc.smtp_code, exc.smtp_error.decode()
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return code, text.decode()
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
    return None


async def test_forged_own_domain_mail_is_refused_on_port_25(world, relay):
    ports, sink = await relay()
    refused = await in_thread(send, ports["smtp"], "alice@example.com", message("alice@example.com"))
    assert refused is not None and refused[0] == 550
    assert refused[1].startswith("5.7.1") and "example.com" in refused[1]
    assert sink.messages == []


async def test_own_domain_mail_with_spf_pass_is_accepted(world, relay):
    world.txt("example.com", "v=spf1 ip4:127.0.0.1 -all")
    ports, sink = await relay()
    assert await in_thread(send, ports["smtp"], "alice@example.com", message("alice@example.com")) is None
    [got] = sink.messages
    fields, _ = headers.split(got.content)
    assert fields[0].name == "Received"
    assert fields[1].name == "Authentication-Results"
    assert "spf=pass smtp.mailfrom=example.com" in fields[1].value


async def test_authenticated_submission_is_not_checked(world, relay):
    ports, sink = await relay()
    forged_looking = message("alice@example.com", body=f"{GTUBE}\r\n")
    assert await in_thread(send, ports["submission"], "alice@example.com", forged_looking, login=True) is None
    [got] = sink.messages
    assert headers.values(got.content, "Authentication-Results") == []
    assert headers.values(got.content, "X-Spam-Flag") == []


async def test_spf_fail_is_refused_at_mail_from(world, relay):
    ports, sink = await relay()
    code, text = await in_thread(send, ports["smtp"], "alice@liar.example", message("alice@liar.example"))
    assert code == 550 and text.startswith("5.7.23")


async def test_gtube_is_refused_with_5_7_1(world, relay):
    ports, sink = await relay()
    code, text = await in_thread(send, ports["smtp"], "alice@good.example",
                                 message("alice@good.example", body=f"{GTUBE}\r\n"))
    assert code == 550 and text.startswith("5.7.1")
    assert sink.messages == []


async def test_clean_mail_is_delivered_with_verdicts_on_top_and_forgeries_gone(world, relay):
    ports, sink = await relay()
    forged = "Authentication-Results: mx.example.com; dkim=pass header.d=example.com\r\nX-Spam-Flag: NO\r\n"
    assert await in_thread(send, ports["smtp"], "alice@good.example",
                           message("alice@good.example", extra=forged)) is None
    [got] = sink.messages
    [ours] = headers.values(got.content, "Authentication-Results")
    assert "dmarc=pass" in ours and "header.d=example.com" not in ours
    assert headers.values(got.content, "X-Spam-Flag") == ["NO"]


async def test_dmarc_quarantine_is_accepted_for_junk(world, relay):
    ports, sink = await relay()
    assert await in_thread(send, ports["smtp"], "alice@soft.example", message("alice@soft.example")) is None
    [got] = sink.messages
    assert headers.values(got.content, "X-Spam-Flag") == ["YES"]
    assert "dmarc=fail (p=QUARANTINE dis=QUARANTINE)" in headers.values(got.content, "Authentication-Results")[0]


async def test_a_blocklisted_client_is_refused_at_rcpt(world, relay):
    world.a(query_name("127.0.0.1", "bl.example"), "127.0.0.2")
    world.txt(query_name("127.0.0.1", "bl.example"), "Listed in the test blocklist")
    ports, sink = await relay(dnsbl=["bl.example"])
    code, text = await in_thread(send, ports["smtp"], "alice@good.example", message("alice@good.example"))
    assert code == 554
    assert text == ("5.7.1 Service unavailable; client host [127.0.0.1] blocked using bl.example; "
                    "Listed in the test blocklist")


async def test_the_relay_counts_verdicts(world, relay):
    ports, sink = await relay()
    await in_thread(send, ports["smtp"], "alice@good.example", message("alice@good.example"))
    await in_thread(send, ports["smtp"], "alice@liar.example", message("alice@liar.example"))
    import urllib.request
    text = await in_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/metrics",
                                                          timeout=10).read().decode())
    assert 'correo_relay_defence_verdicts_total{check="spf",result="pass"} 1' in text
    assert 'correo_relay_defence_verdicts_total{check="spf",result="fail"} 1' in text
    assert 'correo_relay_defence_verdicts_total{check="dmarc",result="pass"} 1' in text
    assert 'correo_relay_rejections_total{reason="spf_fail"} 1' in text


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed (scripts/setup-test-env)")
async def test_swaks_forging_our_domain_is_refused(world, relay):
    ports, sink = await relay(scan=False)
    result = await in_thread(subprocess.run, [
        "swaks", "--server", f"127.0.0.1:{ports['smtp']}", "--from", "ceo@example.com", "--to", "bob@example.com",
        "--helo", "client.good.example", "--timeout", "30"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "<** 550 5.7.1" in result.stdout
    assert sink.messages == []
