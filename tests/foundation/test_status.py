"""Conditions a person reads with kubectl: decided from what the services
report, the same for the operator and correo up."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import jsonschema
import pytest

from correo_operator import loading, model
from correo_operator import status as st

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)


def domain(**spec):
    return model.MailDomain.from_object({"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain",
                                   "metadata": {"name": "example-com", "namespace": "mail", "generation": 3},
                                   "spec": {"domain": "example.com", "aliasDomains": ["example.net"], **spec}})


def mailbox(**spec):
    return model.Mailbox.from_object({"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox",
                                   "metadata": {"name": "alice", "namespace": "mail", "generation": 2},
                                   "spec": {"address": "alice@example.com",
                                            "passwordSecretRef": {"name": "alice-pw"}, **spec}})


def figures(**kw):
    f = {"active": 0, "deferred": 0, "delayedNoticesSent": 0, "bounced": 0, "delivered": 0,
         "oldestDeferredAgeSeconds": 0, "lastErrors": [], "delayed": [], "lastBounces": []}
    return f | kw


def observed(queue_figures=None, senders=None, mailboxes=None, **kw):
    return st.Observed(
        relay={"service": "relay", "ready": True},
        queue={"service": "queue", "ready": True, "domains": {"example.com": queue_figures or figures()},
               "senders": senders or {}},
        mailstore={"service": "mailstore", "ready": True,
                   "mailboxes": mailboxes if mailboxes is not None else
                   {"alice@example.com": {"messages": 2, "bytes": 2048, "quotaBytes": 1 << 30}}},
        secret_keys={"alice-pw": frozenset({"password"})}, dkim_public_key="MIIBkey", **kw)


def conditions(status):
    return {c["type"]: c for c in status["conditions"]}


def test_all_well_is_ready_and_delivering():
    s = st.domain_status(domain(), [mailbox()], observed=observed(), now=NOW)
    c = conditions(s)
    assert {t: c[t]["status"] for t in c} == {"Ready": "True", "RelayAvailable": "True", "QueueAvailable": "True",
                                             "MailstoreAvailable": "True", "Delivering": "True"}
    assert all(x["observedGeneration"] == 3 for x in c.values())
    assert s["observedGeneration"] == 3 and s["mailboxes"] == 1


def test_a_message_deferred_past_the_warning_time_turns_delivering_false():
    delayed = [{"queueId": "Q1", "sender": "alice@example.com", "recipient": "carol@remote.test",
                "destination": "mx.remote.test", "lastError": "451 4.7.1 greylisted", "since": "x",
                "ageSeconds": 5 * 3600}]
    s = st.domain_status(domain(), [], observed=observed(figures(deferred=1, active=1, delayed=delayed)), now=NOW)
    c = conditions(s)["Delivering"]
    assert (c["status"], c["reason"]) == ("False", "DeliveryDelayed")
    assert "carol@remote.test" in c["message"] and "mx.remote.test" in c["message"] and "451 4.7.1" in c["message"]
    assert conditions(s)["Ready"]["status"] == "True"  # the service itself is fine


def test_deferred_but_not_yet_late_is_retrying_with_the_last_error():
    errs = [{"destination": "mx.remote.test", "error": "421 busy", "time": "2026-11-27T11:59:00Z"}]
    s = st.domain_status(domain(), [], observed=observed(figures(deferred=2, lastErrors=errs)), now=NOW)
    c = conditions(s)["Delivering"]
    assert (c["status"], c["reason"]) == ("True", "Retrying") and "421 busy" in c["message"]
    assert s["queue"]["deferred"] == 2 and s["queue"]["lastErrors"][0]["destination"] == "mx.remote.test"


def test_unreachable_queue_makes_the_domain_not_ready_and_delivery_unknown():
    obs = observed()
    obs = st.Observed(relay=obs.relay, queue=None, mailstore=obs.mailstore, secret_keys=obs.secret_keys)
    c = conditions(st.domain_status(domain(), [], observed=obs, now=NOW))
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "QueueUnreachable")
    assert c["Delivering"]["status"] == "Unknown"


def test_no_ready_replicas_names_the_component():
    c = conditions(st.domain_status(domain(), [], observed=observed(availability={"relay": (0, 2)}), now=NOW))
    assert (c["RelayAvailable"]["status"], c["RelayAvailable"]["reason"]) == ("False", "RelayUnavailable")
    assert "0 of 2" in c["RelayAvailable"]["message"]


def test_missing_tls_secret_keeps_the_domain_not_ready_with_a_clear_reason():
    c = conditions(st.domain_status(domain(tls={"secretName": "mail-tls"}), [], observed=observed(), now=NOW))
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "SecretMissing")
    assert "mail-tls" in c["Ready"]["message"]


def test_last_transition_time_stays_while_the_status_does_not_change():
    d = domain()
    first = st.domain_status(d, [], observed=observed(), now=NOW)
    d = dataclasses.replace(d, status=first)
    later = st.domain_status(d, [], observed=observed(), now=NOW + timedelta(hours=1))
    assert later == first  # nothing new: the same document, so the operator writes nothing
    d = dataclasses.replace(d, status=later)
    delayed = [{"recipient": "c@r.test", "destination": "mx", "lastError": "451", "ageSeconds": 99999}]
    changed = st.domain_status(d, [], observed=observed(figures(deferred=1, delayed=delayed)),
                               now=NOW + timedelta(hours=2))
    assert conditions(changed)["Delivering"]["lastTransitionTime"] == "2026-11-27T14:00:00Z"
    assert conditions(changed)["Ready"]["lastTransitionTime"] == "2026-11-27T12:00:00Z"


def test_dns_records_cover_mx_spf_dkim_dmarc_for_every_domain_name():
    recs = st.domain_status(domain(), [], observed=observed(), now=NOW)["dnsRecords"]
    assert {(r["purpose"], r["name"]) for r in recs} >= {
        ("MX", "example.com."), ("MX", "example.net."), ("SPF", "example.com."),
        ("DKIM", "correo._domainkey.example.com."), ("DKIM", "correo._domainkey.example.net."),
        ("DMARC", "_dmarc.example.com.")}
    assert next(r for r in recs if r["purpose"] == "DKIM")["value"] == "v=DKIM1; k=rsa; p=MIIBkey"


@pytest.mark.parametrize("mb,dom,obs,reason", [
    (mailbox(), None, observed(), "DomainNotFound"),
    (mailbox(passwordSecretRef={"name": "nope"}), domain(), observed(), "PasswordSecretMissing"),
    (mailbox(passwordSecretRef={"name": "alice-pw", "key": "hash"}), domain(), observed(), "PasswordSecretMissing"),
    (mailbox(suspended=True), domain(), observed(), "Suspended"),
    (mailbox(), domain(), observed(mailboxes={}), "Provisioning"),
])
def test_mailbox_not_ready_reasons(mb, dom, obs, reason):
    c = conditions(st.mailbox_status(mb, dom, observed=obs, now=NOW))["Ready"]
    assert (c["status"], c["reason"]) == ("False", reason)
    assert c["message"].endswith(".") and c["observedGeneration"] == 2


def test_mailbox_usage_quota_and_delivery():
    senders = {"alice@example.com": {"deferred": 1, "bounced": 2, "delayedNoticesSent": 1, "delivered": 7,
                                     "lastDelivery": "2026-11-27T11:00:00Z",
                                     "lastBounce": {"queueId": "Q", "sender": "alice@example.com",
                                                    "recipient": "x@r.test", "reason": "550 5.1.1 unknown",
                                                    "time": "2026-11-27T10:00:00Z"}}}
    full = {"alice@example.com": {"messages": 9, "bytes": 600 << 20, "quotaBytes": 512 << 20, "refused": 3,
                                  "lastRefusal": {"time": "2026-11-27T11:30:00Z",
                                                  "reason": "552 5.2.2 <alice@example.com>: mailbox is full"}}}
    s = st.mailbox_status(mailbox(quota="512Mi"), domain(), observed=observed(senders=senders, mailboxes=full),
                          now=NOW)
    assert s["usage"] == {"messages": 9, "bytes": 600 << 20, "used": "600Mi", "quotaBytes": 512 << 20,
                          "quota": "512Mi", "quotaUsedPercent": 100}
    q = conditions(s)["QuotaExceeded"]
    assert (q["status"], q["reason"]) == ("True", "QuotaExceeded")
    assert s["delivery"]["bounced"] == 2 and s["delivery"]["lastBounce"]["reason"] == "550 5.1.1 unknown"
    assert s["delivery"]["lastDelivery"] == "2026-11-27T11:00:00Z"
    assert s["incoming"] == {"refused": 3, "junk": 0, "lastRefusal": {
        "time": "2026-11-27T11:30:00Z", "reason": "552 5.2.2 <alice@example.com>: mailbox is full"}}


def test_status_documents_match_the_crd_status_schemas():
    delayed = [{"recipient": "c@r.test", "destination": "mx", "lastError": "451", "ageSeconds": 99999}]
    bounces = [{"queueId": "Q", "sender": "a@example.com", "recipient": "b@r.test", "reason": "550",
                "time": "2026-11-27T10:00:00Z"}]
    obs = observed(figures(deferred=1, delayed=delayed, lastBounces=bounces, bounced=1),
                   endpoints={"smtp": "127.0.0.1:2525", "queueStatus": "http://127.0.0.1:1/status"})
    d = st.domain_status(domain(), [mailbox()], observed=obs, now=NOW)
    m = st.mailbox_status(mailbox(), domain(), observed=obs, now=NOW)
    for kind, doc in (("MailDomain", d), ("Mailbox", m)):
        schema = loading._strict(loading.schema(kind)["properties"]["status"], top=False)
        jsonschema.validate(doc, schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def test_transitions_become_events():
    d = domain()
    ok = st.domain_status(d, [], observed=observed(), now=NOW)
    assert ("Normal", "Ready", ok["conditions"][0]["message"]) in st.transitions(None, ok)
    d = dataclasses.replace(d, status=ok)
    delayed = [{"recipient": "c@r.test", "destination": "mx", "lastError": "451", "ageSeconds": 99999}]
    bounces = [{"queueId": "Q", "sender": "a@example.com", "recipient": "b@r.test", "reason": "550 no such user",
                "time": "2026-11-27T10:00:00Z"}]
    bad = st.domain_status(d, [], observed=observed(figures(deferred=1, delayed=delayed, bounced=1,
                                                            delayedNoticesSent=1, lastBounces=bounces)), now=NOW)
    events = st.transitions(ok, bad)
    reasons = [(e[0], e[1]) for e in events]
    assert ("Warning", "DeliveryDelayed") in reasons and ("Warning", "Bounced") in reasons
    assert ("Warning", "DelayNoticeSent") in reasons
    assert any("b@r.test: 550 no such user" in e[2] for e in events)
    assert st.transitions(bad, bad) == []


def test_a_new_mailbox_is_quiet_until_ready():
    mb = mailbox()
    first = st.mailbox_status(mb, domain(), observed=observed(mailboxes={}), now=NOW)
    assert st.transitions(None, first) == []  # Provisioning, within quota: not news
    mb = dataclasses.replace(mb, status=first)
    ready = st.mailbox_status(mb, domain(), observed=observed(), now=NOW)
    assert [(e[0], e[1]) for e in st.transitions(first, ready)] == [("Normal", "Ready")]


def test_a_mailbox_that_cannot_log_in_is_told_at_once():
    s = st.mailbox_status(mailbox(passwordSecretRef={"name": "nope"}), domain(), observed=observed(), now=NOW)
    assert [(e[0], e[1]) for e in st.transitions(None, s)] == [("Warning", "PasswordSecretMissing")]


def _table_for(queue_figures, senders=None):
    from correo_operator.local import statuscmd

    d, m = domain(), mailbox()
    obs = observed(queue_figures, senders=senders)
    items = [{"kind": "MailDomain", "metadata": {"name": "example-com", "namespace": "mail"},
              "spec": {"domain": "example.com"}, "status": st.domain_status(d, [m], observed=obs, now=NOW)},
             {"kind": "Mailbox", "metadata": {"name": "alice", "namespace": "mail"},
              "spec": {"address": "alice@example.com"}, "status": st.mailbox_status(m, d, observed=obs, now=NOW)}]
    return statuscmd.table(items).splitlines()


def _row(lines, first_column):
    header = next(i for i, ln in enumerate(lines) if ln.startswith("NAMESPACE") and first_column in ln)
    names = lines[header].split()
    return dict(zip(names, lines[header + 1].split()))


def test_correo_status_table_shows_delivery_trouble_in_the_reason_column():
    errs = [{"destination": "mx.remote.test", "error": "421 busy", "time": "2026-11-27T11:59:00Z"}]
    lines = _table_for(figures(deferred=2, lastErrors=errs),
                       senders={"alice@example.com": {"deferred": 2, "bounced": 0, "delayedNoticesSent": 0}})
    assert _row(lines, "MAILDOMAIN")["REASON"] == "Retrying" and _row(lines, "MAILDOMAIN")["DEFERRED"] == "2"
    assert _row(lines, "MAILBOX")["REASON"] == "Retrying"
    assert any("example-com: Delivering=True (Retrying)" in ln and "421 busy" in ln for ln in lines)

    delayed = [{"queueId": "Q1", "sender": "alice@example.com", "recipient": "carol@remote.test",
                "destination": "mx.remote.test", "lastError": "451 4.7.1 greylisted", "since": "x",
                "ageSeconds": 5 * 3600}]
    lines = _table_for(figures(deferred=1, delayed=delayed))
    assert _row(lines, "MAILDOMAIN")["REASON"] == "DeliveryDelayed"

    lines = _table_for(figures())
    assert _row(lines, "MAILDOMAIN")["REASON"] == "Ready" and _row(lines, "MAILBOX")["REASON"] == "Ready"
    assert not [ln for ln in lines if ln.startswith("  ") and "DNS records" not in ln]  # nothing to look at


def test_a_pin_that_names_no_shard_is_told_on_the_mailbox_and_in_correo_status():
    from correo_operator.local import statuscmd

    d, m = domain(mailstore={"shards": 3}), mailbox(shard=7)
    obs = observed(shards={"alice@example.com": 1})
    s = st.mailbox_status(m, d, observed=obs, now=NOW)
    placed = conditions(s)["Placed"]
    assert (placed["status"], placed["reason"], s["shard"]) == ("False", "PinOutOfRange", 1)
    assert placed["message"] == ("spec.shard 7 does not exist (the MailDomain has 3 shard(s), 0 to 2); "
                                 "on shard 1, where it was placed.")
    assert ("Warning", "PinOutOfRange", placed["message"]) in st.transitions(None, s)
    lines = statuscmd.table([{"kind": "Mailbox", "metadata": {"name": "alice", "namespace": "mail"},
                              "spec": {"address": "alice@example.com"}, "status": s}]).splitlines()
    assert f"  alice@example.com: PinOutOfRange: {placed['message']}" in lines
    assert _row(lines, "MAILBOX")["SHARD"] == "1"

    honoured = st.mailbox_status(mailbox(shard=1), d, observed=obs, now=NOW)
    assert (conditions(honoured)["Placed"]["status"], conditions(honoured)["Placed"]["reason"]) == ("True", "Pinned")
    moving = st.mailbox_status(mailbox(shard=2), d, observed=obs, now=NOW)  # a pin elsewhere starts a move
    assert (conditions(moving)["Placed"]["reason"], moving["shard"]) == ("Moving", 1)
    assert "Placed" not in conditions(st.mailbox_status(mailbox(), domain(), observed=observed(), now=NOW))
