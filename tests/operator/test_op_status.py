"""Status from the data plane: conditions, figures, Events and observedGeneration
written on MailDomains and Mailboxes after simulated queue and mailstore reports."""
from __future__ import annotations

import pytest
from opkit import NS, FakeDataPlane, make_ready, mailbox, maildomain, password_secret

from correo_operator import dkimkeys, statuspoll
from correo_operator.model import MailDomain, Mailbox
from correo_operator.reconcile import Reconciler
from correo_server import statusdoc
from correo_server.config import Listen
from correo_server.metrics import Registry
from correo_server.sideport import SidePort

DOMAIN = "example-com"


@pytest.fixture
async def world(store, kube, clock, dataplane):
    store.put(maildomain(DOMAIN))
    for name in ("alice", "bob"):
        store.put(password_secret(f"{name}-password", name))
        store.put(mailbox(name, f"{name}@example.com"))
    dataplane.load_mailboxes("alice@example.com", "bob@example.com")
    r = Reconciler(kube, after=statuspoll.StatusWriter(dataplane, clock=clock), debounce=0)
    await r.run(NS, DOMAIN)
    make_ready(store)
    await r.run(NS, DOMAIN)
    return r


def conditions(obj: dict) -> dict[str, dict]:
    return {c["type"]: c for c in obj["status"]["conditions"]}


def events(store, name: str | None = None) -> list[tuple[str, str, str]]:
    return [(e["type"], e["reason"], e["message"]) for e in store.find("Event", NS)
            if name is None or e["involvedObject"]["name"] == name]


def domain(store) -> dict:
    return store.one("MailDomain", NS, DOMAIN)


def figures(**values) -> dict:
    f = statusdoc.empty_figures()
    f.update(values)
    return f


class TestReady:
    async def test_everything_running_is_ready_with_one_event(self, world, store):
        d = domain(store)
        conds = conditions(d)
        assert {t: c["status"] for t, c in conds.items()} == {
            "Ready": "True", "RelayAvailable": "True", "QueueAvailable": "True",
            "MailstoreAvailable": "True", "Delivering": "True"}
        assert conds["Ready"]["reason"] == "Ready"
        assert d["status"]["observedGeneration"] == d["metadata"]["generation"] == 1
        assert all(c["observedGeneration"] == 1 for c in conds.values())
        assert d["status"]["mailboxes"] == 2
        assert [e for e in events(store, DOMAIN) if e[1] == "Ready"] == [("Normal", "Ready", conds["Ready"]["message"])]
        alice = store.one("Mailbox", NS, "alice")
        assert conditions(alice)["Ready"]["status"] == "True"
        assert alice["status"]["domain"] == DOMAIN
        assert "kopf" not in d["status"] and "kopf" not in alice["status"]

    async def test_workloads_not_ready_explain_which_one(self, store, kube, clock, dataplane):
        store.put(maildomain(DOMAIN))
        await Reconciler(kube, after=statuspoll.StatusWriter(dataplane, clock=clock), debounce=0).run(NS, DOMAIN)
        ready = conditions(domain(store))["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "RelayUnavailable")
        assert "0 of 2" in ready["message"]

    async def test_an_unreachable_queue_is_a_condition(self, world, store, dataplane):
        dataplane.queue = None
        await world.run(NS, DOMAIN)
        conds = conditions(domain(store))
        assert (conds["QueueAvailable"]["status"], conds["QueueAvailable"]["reason"]) == ("False", "QueueUnreachable")
        assert conds["Delivering"]["status"] == "Unknown"
        assert ("Warning", "QueueUnreachable") in [(t, r) for t, r, _ in events(store, DOMAIN)]

    async def test_after_an_edit_observed_generation_follows_and_untouched_conditions_keep_their_time(
            self, world, store, clock):
        before = conditions(domain(store))
        clock.advance(600)
        store.edit("MailDomain", NS, DOMAIN, {"spec": {"relay": {"maxRecipients": 20}}})
        await world.run(NS, DOMAIN)
        d = domain(store)
        assert d["metadata"]["generation"] == 2
        assert d["status"]["observedGeneration"] == 2
        after = conditions(d)
        assert all(c["observedGeneration"] == 2 for c in after.values())
        assert after["Ready"]["lastTransitionTime"] == before["Ready"]["lastTransitionTime"]


class TestQueueFigures:
    async def test_deferred_mail_is_retrying_not_yet_a_problem(self, world, store, dataplane):
        dataplane.queue["domains"]["example.com"] = figures(
            active=2, deferred=2, oldestDeferredAgeSeconds=900,
            lastErrors=[{"destination": "mx.remote.example", "error": "451 4.7.1 greylisted",
                         "time": "2026-11-27T05:45:00Z"}])
        await world.run(NS, DOMAIN)
        d = domain(store)
        delivering = conditions(d)["Delivering"]
        assert (delivering["status"], delivering["reason"]) == ("True", "Retrying")
        assert "451 4.7.1 greylisted" in delivering["message"]
        assert d["status"]["queue"]["deferred"] == 2
        assert d["status"]["queue"]["oldestDeferredAgeSeconds"] == 900
        assert d["status"]["queue"]["lastErrors"][0]["destination"] == "mx.remote.example"
        assert conditions(d)["Ready"]["status"] == "True"

    async def test_delayed_mail_turns_delivering_false_with_destination_and_error(self, world, store, dataplane):
        dataplane.queue["domains"]["example.com"] = figures(
            active=1, deferred=1, delayedNoticesSent=1, oldestDeferredAgeSeconds=5 * 3600,
            delayed=[{"queueId": "Q1", "sender": "alice@example.com", "recipient": "carol@remote.example",
                      "destination": "mx.remote.example", "lastError": "421 4.4.2 connection timed out",
                      "since": "2026-11-27T01:00:00Z", "ageSeconds": 5 * 3600}])
        dataplane.queue["senders"]["alice@example.com"] = {
            "deferred": 1, "bounced": 0, "delayedNoticesSent": 1, "delivered": 3,
            "lastBounce": None, "lastDelivery": "2026-11-27T05:00:00Z"}
        await world.run(NS, DOMAIN)
        d = domain(store)
        delivering = conditions(d)["Delivering"]
        assert (delivering["status"], delivering["reason"]) == ("False", "DeliveryDelayed")
        assert "carol@remote.example" in delivering["message"]
        assert "mx.remote.example" in delivering["message"] and "421 4.4.2" in delivering["message"]
        assert d["status"]["queue"]["delayedNoticesSent"] == 1
        told = events(store, DOMAIN)
        assert ("Warning", "DeliveryDelayed", delivering["message"]) in told
        assert any(r == "DelayNoticeSent" for _, r, _ in told)
        alice = store.one("Mailbox", NS, "alice")
        assert alice["status"]["delivery"] == {"deferred": 1, "bounced": 0, "delayedNoticesSent": 1,
                                               "lastDelivery": "2026-11-27T05:00:00Z"}

    async def test_a_bounce_is_counted_shown_and_told_once(self, world, store, dataplane, clock):
        bounce = {"queueId": "Q2", "sender": "bob@example.com", "recipient": "nobody@remote.example",
                  "reason": "550 5.1.1 no such user", "time": "2026-11-27T05:59:00Z"}
        dataplane.queue["domains"]["example.com"] = figures(bounced=1, lastBounces=[bounce])
        dataplane.queue["senders"]["bob@example.com"] = {
            "deferred": 0, "bounced": 1, "delayedNoticesSent": 0, "delivered": 0,
            "lastBounce": bounce, "lastDelivery": None}
        await world.run(NS, DOMAIN)
        d = domain(store)
        assert d["status"]["queue"]["bounced"] == 1
        assert d["status"]["queue"]["lastBounces"][0]["recipient"] == "nobody@remote.example"
        bounced = [e for e in events(store, DOMAIN) if e[1] == "Bounced"]
        assert len(bounced) == 1 and "nobody@remote.example" in bounced[0][2] and bounced[0][0] == "Warning"
        bob = store.one("Mailbox", NS, "bob")
        assert bob["status"]["delivery"]["bounced"] == 1
        assert bob["status"]["delivery"]["lastBounce"] == {"recipient": "nobody@remote.example",
                                                           "reason": "550 5.1.1 no such user",
                                                           "time": "2026-11-27T05:59:00Z"}
        assert [e for e in events(store, "bob") if e[1] == "Bounced"]
        # The same figures again: no new status write, no new Event.
        mark = len(store.requests)
        clock.advance(30)
        await world.run(NS, DOMAIN)
        assert store.writes(since=mark) == []
        assert len([e for e in events(store, DOMAIN) if e[1] == "Bounced"]) == 1


class TestMailboxes:
    async def test_usage_and_quota_exceeded(self, world, store, dataplane):
        dataplane.mailstore["mailboxes"]["bob@example.com"] = {
            "messages": 12, "bytes": 1 << 30, "quotaBytes": 1 << 30, "lastDelivery": "2026-11-27T05:58:00Z"}
        await world.run(NS, DOMAIN)
        bob = store.one("Mailbox", NS, "bob")
        assert bob["status"]["usage"]["messages"] == 12
        assert bob["status"]["usage"]["used"] == "1Gi" and bob["status"]["usage"]["quotaUsedPercent"] == 100
        quota = conditions(bob)["QuotaExceeded"]
        assert (quota["status"], quota["reason"]) == ("True", "QuotaExceeded")
        assert ("Warning", "QuotaExceeded", quota["message"]) in events(store, "bob")

    async def test_a_mailbox_the_mailstore_has_not_loaded_yet_is_provisioning(self, world, store, kube):
        store.put(password_secret("carol-password", "c"))
        store.put(mailbox("carol", "carol@example.com"))
        await world.run(NS, DOMAIN)
        ready = conditions(store.one("Mailbox", NS, "carol"))["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "Provisioning")

    async def test_a_mailbox_without_a_domain_says_so(self, store, kube, clock):
        store.put(password_secret("zed-password", "z"))
        mb = store.put(mailbox("zed", "zed@nowhere.example"))
        writer = statuspoll.StatusWriter(FakeDataPlane(), clock=clock)
        assert await writer.orphan(kube, Mailbox.from_object(mb)) is True
        ready = conditions(store.one("Mailbox", NS, "zed"))["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "DomainNotFound")
        assert await writer.orphan(kube, Mailbox.from_object(store.one("Mailbox", NS, "zed"))) is False  # unchanged: no write


    async def test_a_mailbox_the_domain_stops_hosting_is_released(self, world, store):
        store.edit("MailDomain", NS, DOMAIN, {"spec": {"aliasDomains": ["example.net"]}})
        store.put(password_secret("erin-password", "e"))
        store.put(mailbox("erin", "erin@example.net"))
        await world.run(NS, DOMAIN)
        assert store.one("Mailbox", NS, "erin")["status"]["domain"] == DOMAIN
        store.edit("MailDomain", NS, DOMAIN, {"spec": {"aliasDomains": None}})
        await world.run(NS, DOMAIN)
        erin = store.one("Mailbox", NS, "erin")
        ready = conditions(erin)["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "DomainNotFound")
        assert "domain" not in erin["status"]
        mark = len(store.requests)
        await world.run(NS, DOMAIN)
        assert not [w for w in store.writes(since=mark) if w.name == "erin"]


class TestPublishedRecords:
    async def test_dns_records_include_the_generated_dkim_key(self, world, store):
        secret = store.one("Secret", NS, f"{DOMAIN}-dkim")
        public = dkimkeys.public_key_b64(secret)
        records = {r["purpose"]: r for r in domain(store)["status"]["dnsRecords"]}
        assert records["DKIM"]["name"] == "correo._domainkey.example.com."
        assert records["DKIM"]["value"] == f"v=DKIM1; k=rsa; p={public}"
        assert records["MX"]["value"] == "10 mail.example.com."
        assert {"SPF", "DMARC"} <= set(records)

    async def test_the_dkim_key_is_generated_once(self, world, store):
        before = store.one("Secret", NS, f"{DOMAIN}-dkim")
        await world.run(NS, DOMAIN)
        after = store.one("Secret", NS, f"{DOMAIN}-dkim")
        assert after["data"] == before["data"]
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        creates = [r for r in store.requests if r.verb == "create" and r.resource == "secrets"]
        assert [r.name for r in creates] == [f"{DOMAIN}-dkim", f"{DOMAIN}-srs"]  # the SRS key: also once

    async def test_endpoints_name_the_services_and_a_load_balancer_address(self, world, store):
        eps = domain(store)["status"]["endpoints"]
        assert eps["smtp"] == f"{DOMAIN}-relay.{NS}.svc:25"
        assert eps["imaps"] == f"{DOMAIN}-mailstore.{NS}.svc:993"
        assert eps["queueStatus"].endswith("/status")
        store.edit("Service", NS, f"{DOMAIN}-relay", {"spec": {"type": "LoadBalancer"}}, manager="someone")
        store.edit("Service", NS, f"{DOMAIN}-relay", {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.25"}]}}},
                   manager="cloud-controller", sub="status")
        store.edit("MailDomain", NS, DOMAIN, {"spec": {"relay": {"serviceType": "LoadBalancer"}}})
        await world.run(NS, DOMAIN)
        assert domain(store)["status"]["endpoints"]["submission"] == "203.0.113.25:587"


class TestReadingStatus:
    async def test_the_http_reader_gets_a_service_document_and_none_when_down(self):
        doc = {"service": "queue", "ready": True, "time": "2026-11-27T06:00:00Z",
               "totals": statusdoc.empty_figures(), "domains": {}, "senders": {}}
        side = SidePort(Listen("127.0.0.1", 0), "queue", metrics=Registry(), status=lambda: doc)
        port = await side.start()
        reader = statuspoll.HttpStatusReader(timeout=2)
        try:
            assert await reader(f"http://127.0.0.1:{port}/status") == doc
            await side.stop()
            assert await reader(f"http://127.0.0.1:{port}/status") is None
        finally:
            await side.stop()
            await reader.close()


class TestWrittenObjectsAreValid:
    async def test_events_and_the_dkim_secret_pass_strict_validation_for_1_36(self, world, store):
        import kubernetes_validate
        from correo_operator.kube import event_body
        d = domain(store)
        kubernetes_validate.validate(event_body(d, type="Warning", reason="Bounced", message="x" * 2000),
                                     "1.36.0", strict=True)
        for event in store.find("Event", NS):
            kubernetes_validate.validate(event, "1.36.0", strict=True)
        kubernetes_validate.validate(dkimkeys.secret_for(MailDomain.from_object(d), dkimkeys.generate_pem(1024)), "1.36.0", strict=True)
