"""What the side ports' metrics promise, on the registry every service uses:
the Prometheus text format of the official client, families visible before
their first event, histograms, figures computed at scrape time, the
certificate expiry following a renewal, and free space per volume."""
from __future__ import annotations

import datetime
import os

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from correo_server.config import Listen
from correo_server.metrics import Registry
from correo_server.sideport import SidePort
from correo_server.tlsfiles import ServerTLS


def families(registry: Registry) -> dict:
    return {f.name: f for f in text_string_to_metric_families(registry.render())}


def test_declared_families_show_before_their_first_event():
    r = Registry()
    r.counter("relay_messages_accepted_total", "Messages accepted, by listener", labels=("listener",))
    r.counter("queue_enqueued_total", "Messages accepted into the queue")  # labels not said: none until used
    r.gauge("relay_queue_up", "1 when the queue answered", labels=())
    f = families(r)
    assert f["correo_relay_messages_accepted"].type == "counter"
    assert f["correo_relay_messages_accepted"].samples == []  # no listener yet, no made-up series
    assert [s.value for s in f["correo_queue_enqueued"].samples] == [0.0]
    assert [s.value for s in f["correo_relay_queue_up"].samples] == [0.0]
    assert "correo_queue_enqueued_created" not in r.render()  # no _created noise


def test_counters_gauges_and_histograms_with_labels():
    r = Registry()
    r.counter("queue_rejected_total", "refused", labels=("reason",))
    r.histogram("mailstore_imap_command_duration_seconds", "latency", labels=("command",))
    r.inc("queue_rejected_total", reason="disk_full")
    r.inc("queue_rejected_total", 2, reason="disk_full")
    r.inc("mailstore_sessions_active", protocol="imap")  # undeclared: a gauge by its name
    r.inc("mailstore_sessions_active", -1, protocol="imap")
    r.observe("mailstore_imap_command_duration_seconds", 0.003, command="fetch")
    r.observe("mailstore_imap_command_duration_seconds", 0.2, command="fetch")
    assert r.value("queue_rejected_total", reason="disk_full") == 3
    assert r.value("mailstore_sessions_active", protocol="imap") == 0
    assert r.value("mailstore_imap_command_duration_seconds", command="fetch") == 2
    text = r.render()
    assert 'correo_mailstore_imap_command_duration_seconds_bucket{command="fetch",le="0.005"} 1.0' in text
    assert 'correo_mailstore_imap_command_duration_seconds_bucket{command="fetch",le="+Inf"} 2.0' in text
    assert families(r)["correo_mailstore_sessions_active"].type == "gauge"


def test_a_family_declared_without_labels_takes_those_of_its_first_use():
    r = Registry()
    r.counter("mailstore_logins_total", "Logins by protocol and result")
    r.inc("mailstore_logins_total", protocol="pop3", result="ok")
    samples = families(r)["correo_mailstore_logins"].samples
    assert [(s.labels, s.value) for s in samples] == [({"protocol": "pop3", "result": "ok"}, 1.0)]
    assert r.total("mailstore_logins_total") == 1


def test_computed_families_are_read_at_scrape_time():
    depth = {"pending": 1, "deferred": 0}
    r = Registry()
    r.gauge_fn("queue_recipients", "by state", lambda: [({"state": k}, v) for k, v in depth.items()])
    r.counter_fn("queue_bounced_recipients_total", "kept across restarts", lambda: [({}, 7)])
    depth["deferred"] = 4
    f = families(r)
    assert {s.labels["state"]: s.value for s in f["correo_queue_recipients"].samples} == {"pending": 1, "deferred": 4}
    assert f["correo_queue_bounced_recipients"].type == "counter"
    assert [s.value for s in f["correo_queue_bounced_recipients"].samples] == [7.0]


def test_every_registry_is_its_own_and_has_process_metrics():
    a, b = Registry(), Registry()
    a.inc("x_total")
    assert "correo_x_total" not in b.render()
    assert "process_cpu_seconds_total" in a.render() and "python_info" in a.render()


def self_signed(path_cert, path_key, days: int) -> float:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.com")])
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    path_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    path_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return (now + datetime.timedelta(days=days)).timestamp()


def test_certificate_expiry_follows_a_renewal(tmp_path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    first = self_signed(cert, key, days=10)
    tls = ServerTLS(cert, key)
    r = Registry()
    r.watch_tls(tls)
    assert r.value("tls_certificate_expiry_timestamp_seconds") == first
    os.utime(cert, (1, 1))  # a renewal may keep the size; the modification time tells
    renewed = self_signed(cert, key, days=90)
    assert r.value("tls_certificate_expiry_timestamp_seconds") == renewed
    no_tls = Registry()
    no_tls.watch_tls(None)
    assert families(no_tls)["correo_tls_certificate_expiry_timestamp_seconds"].samples == []


def test_volume_space_is_reported_per_volume(tmp_path):
    r = Registry()
    r.watch_volume("spool", tmp_path)
    r.watch_volume("mail", tmp_path / "not-there-yet")
    st = os.statvfs(tmp_path)
    f = families(r)
    assert [(s.labels, s.value) for s in f["correo_volume_size_bytes"].samples] == \
        [({"volume": "spool"}, st.f_blocks * st.f_frsize)]
    (free,) = f["correo_volume_available_bytes"].samples
    assert 0 < free.value <= st.f_blocks * st.f_frsize


async def test_the_side_port_serves_the_text_format_prometheus_asks_for():
    r = Registry()
    r.inc("relay_connections_total", listener="smtp")
    side = SidePort(Listen("127.0.0.1", 0), "relay", metrics=r, status=dict)
    port = await side.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as rsp:
                assert rsp.status == 200
                assert rsp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
                text = await rsp.text()
    finally:
        await side.stop()
    assert 'correo_relay_connections_total{listener="smtp"} 1.0' in text
