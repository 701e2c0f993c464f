"""Status and conditions: what the services report, turned into MailDomain and
Mailbox status.  One implementation for both runtimes: the operator's status
timer and ``correo status`` call these same pure functions.

Inputs are the typed MailDomain and Mailbox (``model``; their ``status`` is
the previous document), the ``/status`` documents of the services (shapes in
``correo_server.statusdoc``), gathered by the caller into :class:`Observed`,
and the clock (``now``).  Each condition comes from a small decision function
that returns ``(status, reason, message)``, cert-manager style.
``lastTransitionTime`` is carried over from the previous status while a
condition's status does not change, so an unchanged world gives an unchanged
document (and the operator writes nothing).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from correo_server import autoreply, statusdoc
from correo_server.mtasts import policy as stspolicy

from . import mailrules, placement
from .model import MailDomain, Mailbox
from .quantity import format_bytes, parse_bytes

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"
Decision = tuple[str, str, str]  # (status, reason, message)


@dataclass(frozen=True)
class Observed:
    """What the caller saw of the running services.

    ``None`` for a status document means it could not be read.  ``availability``
    gives (ready, wanted) replicas per component when the runtime knows them
    (Kubernetes workloads, local processes).  ``secret_keys`` names the Secrets
    that exist and their usable keys (``secretdata.usable_keys``: never values).
    """

    relay: Mapping[str, Any] | None = None
    queue: Mapping[str, Any] | None = None
    mailstore: Mapping[str, Any] | None = None
    availability: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    secret_keys: Mapping[str, frozenset[str]] = field(default_factory=dict)
    dkim_public_key: str | None = None  # base64 of the DER public key
    endpoints: Mapping[str, str] = field(default_factory=dict)
    # Where the autoconfig Ingress is reachable (its load balancer's IP or
    # host name), when the runtime knows it.
    autoconfig_address: str | None = None
    # Mailbox address (lower case) → its shard, from the directory in force
    # (``placement.shards_in_directory``); only read when the domain has shards.
    shards: Mapping[str, int] = field(default_factory=dict)
    # With shards: each shard's /status (None: it does not answer), by shard
    # id; ``mailstore`` is then their merge (:func:`merge_shards`).
    mailstore_shards: tuple[Mapping[str, Any] | None, ...] = ()
    # With shards: Mailbox address (lower case) → where the reconcile pass
    # placed it and why (``placement.place`` against the directory as it was
    # before the pass: the only moment a removed shard is seen).  Without an
    # entry, the placement is worked out from ``shards``.
    placements: Mapping[str, placement.Placement] = field(default_factory=dict)
    # With queue replicas: each replica's /status (None: it does not answer),
    # by ordinal, the leaving ones included; ``queue`` is then their merge
    # (:func:`merge_queue_replicas`).
    queue_replicas: tuple[Mapping[str, Any] | None, ...] = ()
    # With shards: Mailbox address (lower case) → the state of its move as
    # the orchestrator last saw it (``moves.Step``: reason, message, moving);
    # none: no move.
    moves: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _ts(now: datetime) -> str:
    return statusdoc.rfc3339(now)


def _age(seconds: int | float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def condition(type_: str, decision: Decision, generation: int, now: datetime,
              previous: list[dict] | None) -> dict:
    """A Kubernetes condition; keeps the previous lastTransitionTime when the
    status is unchanged."""
    status, reason, message = decision
    last = _ts(now)
    for old in previous or []:
        if old.get("type") == type_ and old.get("status") == status and old.get("lastTransitionTime"):
            last = old["lastTransitionTime"]
    return {"type": type_, "status": status, "observedGeneration": generation,
            "lastTransitionTime": last, "reason": reason, "message": message}


def get_condition(status: Mapping[str, Any] | None, type_: str) -> dict | None:
    for c in (status or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


# ---------------------------------------------------------------------------
# MailDomain decisions
# ---------------------------------------------------------------------------

def _component(name: str, title: str, doc: Mapping[str, Any] | None,
               availability: Mapping[str, tuple[int, int]]) -> Decision:
    reason_prefix = name.capitalize()
    if name in availability:
        ready, wanted = availability[name]
        if ready < 1:
            return FALSE, f"{reason_prefix}Unavailable", f"No {title} is running ({ready} of {wanted} ready)."
    if doc is None:
        if name in availability:
            ready, wanted = availability[name]
            if name == "relay":  # the relay's status port is not always reachable: replicas decide
                return TRUE, f"{reason_prefix}Ready", f"{ready} of {wanted} {title} replicas are ready."
        return FALSE, f"{reason_prefix}Unreachable", f"The {title}'s status endpoint does not answer."
    if not doc.get("ready", False):
        why = "it cannot reach the queue" if name == "relay" else "it reports not ready"
        return FALSE, f"{reason_prefix}NotReady", f"The {title} is running but {why}."
    if name in availability:
        ready, wanted = availability[name]
        return TRUE, f"{reason_prefix}Ready", f"{ready} of {wanted} {title} replicas are ready."
    return TRUE, f"{reason_prefix}Ready", f"The {title} is ready."


def merge_shards(docs: list[Mapping[str, Any] | None] | tuple) -> dict | None:
    """One mailstore document from the shards' (each lists its own mailboxes):
    ready when every shard is; None when no shard answers."""
    live = [d for d in docs if d is not None]
    if not live:
        return None
    mailboxes: dict[str, Any] = {}
    for d in live:
        mailboxes.update(d.get("mailboxes") or {})
    return {"ready": len(live) == len(docs) and all(d.get("ready", False) for d in live), "mailboxes": mailboxes}


def shards_available(docs: tuple[Mapping[str, Any] | None, ...]) -> Decision:
    """MailstoreAvailable with shards: which shards are down (their mailboxes
    cannot be read and their mail waits in the queue; the others are served)."""
    down = [i for i, d in enumerate(docs) if d is None or not d.get("ready", False)]
    if not down:
        return TRUE, "MailstoreReady", f"All {len(docs)} mailstore shards are ready."
    which = ", ".join(map(str, down))
    if len(down) == len(docs):
        return FALSE, "MailstoreUnavailable", f"No mailstore shard is ready (shards {which})."
    return FALSE, "ShardsUnavailable", (f"Mailstore shard(s) {which} of {len(docs)} are not ready: their "
                                        "mailboxes cannot log in and mail for them waits in the queue; the "
                                        "other shards serve theirs.")


def shard_figures(docs: tuple[Mapping[str, Any] | None, ...]) -> list[dict]:
    return [{"shard": i, "ready": bool(d and d.get("ready", False)),
             "mailboxes": len((d or {}).get("mailboxes") or {})} for i, d in enumerate(docs)]


def _merge_figures(figs: list[Mapping[str, Any]]) -> dict:
    """One queue's figures (``statusdoc.QueueFigures``) from several replicas'."""
    out: dict[str, Any] = dict(statusdoc.empty_figures())
    for f in figs:
        for k in ("active", "deferred", "delayedNoticesSent", "bounced", "delivered"):
            out[k] += int(f.get(k) or 0)
        out["oldestDeferredAgeSeconds"] = max(out["oldestDeferredAgeSeconds"], int(f.get("oldestDeferredAgeSeconds") or 0))
        out["lastErrors"] += list(f.get("lastErrors") or [])
        out["delayed"] += list(f.get("delayed") or [])
        out["lastBounces"] += list(f.get("lastBounces") or [])
    latest: dict[str, Any] = {}  # one per destination, the newest
    for e in sorted(out["lastErrors"], key=lambda e: e.get("time", "")):
        latest[e.get("destination", "")] = e
    out["lastErrors"] = sorted(latest.values(), key=lambda e: e.get("time", ""), reverse=True)
    out["delayed"] = sorted(out["delayed"], key=lambda d: -int(d.get("ageSeconds") or 0))[:50]
    out["lastBounces"] = sorted(out["lastBounces"], key=lambda b: b.get("time", ""), reverse=True)[:20]
    return out


def _merge_refusals(docs: list[Mapping[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for d in docs:
        for domain, t in (d.get("refusals") or {}).items():
            m = out.setdefault(domain, {"refused": 0, "byReason": {}, "last": None})
            m["refused"] += int(t.get("refused") or 0)
            for reason, n in (t.get("byReason") or {}).items():
                m["byReason"][reason] = m["byReason"].get(reason, 0) + int(n)
            last = t.get("last")
            if last and (m["last"] is None or last.get("time", "") > m["last"].get("time", "")):
                m["last"] = last
    return out


def merge_queue_replicas(docs: list[Mapping[str, Any] | None] | tuple) -> dict | None:
    """One queue document from the replicas' (each counts its own spool and
    what it delivered): figures added up, ready when a replica that takes
    mail is; None when no replica answers."""
    live = [d for d in docs if d is not None]
    if not live:
        return None
    domains = sorted({name for d in live for name in (d.get("domains") or {})})
    senders: dict[str, dict] = {}
    for d in live:
        for name, f in (d.get("senders") or {}).items():
            m = senders.setdefault(name, {"deferred": 0, "bounced": 0, "delayedNoticesSent": 0, "delivered": 0,
                                          "lastBounce": None, "lastDelivery": None})
            for k in ("deferred", "bounced", "delayedNoticesSent", "delivered"):
                m[k] += int(f.get(k) or 0)
            if f.get("lastBounce") and (m["lastBounce"] is None
                                        or f["lastBounce"].get("time", "") > m["lastBounce"].get("time", "")):
                m["lastBounce"] = f["lastBounce"]
            if f.get("lastDelivery") and (m["lastDelivery"] or "") < f["lastDelivery"]:
                m["lastDelivery"] = f["lastDelivery"]
    out = {
        "service": "queue",
        "ready": any(d.get("ready", False) and not (d.get("drain") or {}).get("leaving") for d in live),
        "time": max(str(d.get("time", "")) for d in live),
        "totals": _merge_figures([d.get("totals") or {} for d in live]),
        "domains": {name: _merge_figures([(d.get("domains") or {}).get(name) or {} for d in live])
                    for name in domains},
        "senders": senders,
    }
    if any("refusals" in d for d in live):
        out["refusals"] = _merge_refusals(live)
    return out


def queue_replicas_available(docs: tuple[Mapping[str, Any] | None, ...], wanted: int) -> Decision:
    """QueueAvailable with replicas: mail goes on while one replica that
    takes mail is ready; which are down (or leaving) is said."""
    staying = docs[:wanted]
    down = [i for i, d in enumerate(staying) if d is None or not d.get("ready", False)]
    leaving = [i for i in range(wanted, len(docs))]
    note = (f" Replica(s) {', '.join(map(str, leaving))} are draining into the others before they go."
            if leaving else "")
    if not down:
        return TRUE, "QueueReady", f"All {wanted} queue replicas are ready.{note}"
    which = ", ".join(map(str, down))
    if len(down) == len(staying):
        return FALSE, "QueueUnavailable", f"No queue replica is ready (replicas {which}).{note}"
    return FALSE, "ReplicasUnavailable", (f"Queue replica(s) {which} of {wanted} are not ready: the relay hands "
                                          "mail to the others; what they hold waits until they are back." + note)


def queue_replica_figures(docs: tuple[Mapping[str, Any] | None, ...], wanted: int) -> list[dict]:
    out = []
    for i, d in enumerate(docs):
        totals = (d or {}).get("totals") or {}
        out.append({"replica": i, "ready": bool(d and d.get("ready", False)),
                    "messages": int((d or {}).get("messages") or 0),
                    "active": int(totals.get("active") or 0), "deferred": int(totals.get("deferred") or 0),
                    "draining": i >= wanted or bool(((d or {}).get("drain") or {}).get("leaving"))})
    return out


def domain_figures(domain: MailDomain, queue: Mapping[str, Any] | None) -> dict:
    """This domain's figures from the queue's status (zeros when it has none)."""
    if queue is None:
        return dict(statusdoc.empty_figures())
    return dict((queue.get("domains") or {}).get(domain.domain) or statusdoc.empty_figures())


def delivering(domain: MailDomain, queue: Mapping[str, Any] | None) -> Decision:
    if queue is None:
        return UNKNOWN, "QueueUnreachable", "The queue's status cannot be read."
    figures = domain_figures(domain, queue)
    delayed = figures.get("delayed") or []
    if delayed:
        worst = max(delayed, key=lambda d: d.get("ageSeconds", 0))
        warn = domain.spec.queue.retry.warn_after_seconds
        more = f" and {len(delayed) - 1} more" if len(delayed) > 1 else ""
        return FALSE, "DeliveryDelayed", (
            f"Mail to {worst['recipient']}{more} is undelivered after {_age(worst.get('ageSeconds', 0))} "
            f"(warning after {_age(warn)}): {worst.get('destination') or 'destination'} said "
            f"{worst.get('lastError') or 'nothing'}.")
    deferred = figures.get("deferred", 0)
    if deferred:
        errors = figures.get("lastErrors") or []
        last = f" Last error: {errors[0]['destination']}: {errors[0]['error']}." if errors else ""
        return TRUE, "Retrying", (f"{deferred} recipient(s) wait for a retry after a temporary failure, "
                                  f"none yet past the warning time.{last}")
    return TRUE, "Delivering", "Nothing is waiting: every message so far was delivered or returned."


def _missing_domain_secrets(domain: MailDomain, observed: Observed) -> list[str]:
    missing = []
    tls = domain.tls_secret
    if tls:
        keys = observed.secret_keys.get(tls)
        if keys is None or not {"tls.crt", "tls.key"} <= set(keys):
            missing.append(f"TLS Secret {tls} (with tls.crt and tls.key)")
    cred = domain.smarthost_credentials
    if cred:
        keys = observed.secret_keys.get(cred.name)
        want = {cred.username_key, cred.password_key}
        if keys is None or not want <= set(keys):
            missing.append(f"smarthost credentials Secret {cred.name} (with {', '.join(sorted(want))})")
    return missing


def ready(components: dict[str, Decision], missing: list[str]) -> Decision:
    if missing:
        return FALSE, "SecretMissing", f"Waiting for {'; '.join(missing)}."
    down = [(name, d) for name, d in components.items() if d[0] != TRUE]
    if down:
        name, (_, reason, message) = down[0]
        return FALSE, reason, message
    return TRUE, "Ready", "Relay, queue and mailstore are ready: mail is accepted, queued and stored."


def _srv(name: str, service: str, priority: int, port: int, host: str, offered: bool) -> dict:
    """An RFC 6186/8314 SRV record; target "." says the service is not offered (RFC 6186 section 4)."""
    value = f"{priority} 1 {port} {host}." if offered else "0 0 0 ."
    return {"purpose": "SRV", "type": "SRV", "name": f"{service}._tcp.{name}.", "value": value}


def _pointer(purpose: str, name: str, target: str) -> dict:
    """``name`` pointing at an address (A/AAAA) or a host name (CNAME)."""
    try:
        kind = "AAAA" if ipaddress.ip_address(target).version == 6 else "A"
        return {"purpose": purpose, "type": kind, "name": f"{name}.", "value": target}
    except ValueError:
        return {"purpose": purpose, "type": "CNAME", "name": f"{name}.", "value": f"{target.rstrip('.')}."}


def client_records(domain: MailDomain, autoconfig_address: str | None = None) -> list[dict]:
    """What lets mail clients and sending servers find their way, for every
    domain name: SRV records for submission, IMAP and POP3 (implicit TLS
    preferred, RFC 8314; target "." for what is not offered) and ManageSieve
    (RFC 5804, served with the mailstore), MTA-STS (the
    ``_mta-sts`` TXT with the id of the policy served, and the
    ``mta-sts.`` host), TLS-RPT (RFC 8460), and the autoconfig and
    autodiscover names.  The HTTP names point at the autoconfig Ingress's
    address when it is known, else at the mail hostname."""
    spec = domain.spec
    host = domain.hostname
    tls, imap, pop3 = domain.tls_secret is not None, spec.mailstore.imap, spec.mailstore.pop3
    policy = stspolicy.render(spec.mta_sts.mode, spec.mta_sts.max_age_seconds, domain.mta_sts_mx)
    web = autoconfig_address or host
    records = []
    for name in domain.domain_names:
        records += [
            _srv(name, "_submissions", 0, 465, host, tls),
            _srv(name, "_submission", 10, 587, host, True),
            _srv(name, "_imaps", 0, 993, host, imap and tls),
            _srv(name, "_imap", 10, 143, host, imap),
            _srv(name, "_pop3s", 20, 995, host, pop3 and tls),
            _srv(name, "_pop3", 30, 110, host, pop3),
            _srv(name, "_sieve", 0, 4190, host, imap or pop3),  # ManageSieve (RFC 5804 section 1.8)
            {"purpose": "MTA-STS", "type": "TXT", "name": f"_mta-sts.{name}.", "value": stspolicy.txt_record(policy)},
            _pointer("MTA-STS", f"mta-sts.{name}", web),
            {"purpose": "TLS-RPT", "type": "TXT", "name": f"_smtp._tls.{name}.",
             "value": f"v=TLSRPTv1; rua={','.join(domain.tls_report_uris)}"},
        ]
        if spec.autoconfig.enabled:
            records += [
                _pointer("Autoconfig", f"autoconfig.{name}", web),
                _pointer("Autodiscover", f"autodiscover.{name}", web),
                {"purpose": "Autodiscover", "type": "SRV", "name": f"_autodiscover._tcp.{name}.",
                 "value": f"0 1 443 autodiscover.{name}."},
            ]
    return records


def dns_records(domain: MailDomain, dkim_public_key: str | None, autoconfig_address: str | None = None) -> list[dict]:
    """The records a domain owner publishes: MX and SPF for every domain name,
    the DKIM key, DMARC, then :func:`client_records`."""
    spec = domain.spec
    host = domain.hostname
    names = [spec.domain, *sorted(spec.alias_domains)]
    records = []
    for name in names:
        records.append({"purpose": "MX", "type": "MX", "name": f"{name}.", "value": f"10 {host}."})
        records.append({"purpose": "SPF", "type": "TXT", "name": f"{name}.", "value": "v=spf1 mx -all"})
    if spec.dkim.enabled and dkim_public_key:
        # The relay signs with d= the From: domain, alias domains included, so
        # each name gets the key.
        for name in names:
            records.append({"purpose": "DKIM", "type": "TXT",
                            "name": f"{spec.dkim.selector}._domainkey.{name}.",
                            "value": f"v=DKIM1; k=rsa; p={dkim_public_key}"})
    records.append({"purpose": "DMARC", "type": "TXT", "name": f"_dmarc.{spec.domain}.",
                    "value": f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{spec.domain}"})
    return records + client_records(domain, autoconfig_address)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def incoming(domain: MailDomain, queue: Mapping[str, Any] | None) -> dict:
    """What the relays refused for this domain (the queue adds their reports
    up: ``refusals`` in its status, ``correo_server.refusalreport``)."""
    found = ((queue or {}).get("refusals") or {}).get(domain.domain) or {}
    out: dict[str, Any] = {"refused": int(found.get("refused") or 0),
                           "refusedByReason": {_camel(k): int(v) for k, v in sorted((found.get("byReason") or {}).items())}}
    last = found.get("last")
    if last:
        out["lastRefusal"] = {k: (_camel(last[k]) if k == "reason" else last[k])
                              for k in ("time", "reason", "reply", "sender", "recipient", "client") if last.get(k)}
    return out


def domain_status(domain: MailDomain, mailboxes: list[Mailbox], *, observed: Observed, now: datetime) -> dict:
    """The whole ``status`` of a MailDomain."""
    previous = domain.status.get("conditions")
    gen = domain.metadata.generation
    components = {
        "relay": _component("relay", "relay", observed.relay, observed.availability),
        "queue": _component("queue", "queue", observed.queue, observed.availability),
        "mailstore": _component("mailstore", "mailstore", observed.mailstore, observed.availability),
    }
    if observed.mailstore_shards:
        components["mailstore"] = shards_available(observed.mailstore_shards)
    if observed.queue_replicas:
        components["queue"] = queue_replicas_available(observed.queue_replicas, domain.spec.queue.replicas)
    decisions = {
        "Ready": ready(components, _missing_domain_secrets(domain, observed)),
        "RelayAvailable": components["relay"],
        "QueueAvailable": components["queue"],
        "MailstoreAvailable": components["mailstore"],
        "Delivering": delivering(domain, observed.queue),
    }
    figures = domain_figures(domain, observed.queue)
    status: dict[str, Any] = {
        "observedGeneration": gen,
        "conditions": [condition(t, d, gen, now, previous) for t, d in decisions.items()],
        "mailboxes": len(mailboxes),
        "queue": {
            "active": int(figures.get("active", 0)),
            "deferred": int(figures.get("deferred", 0)),
            "delayedNoticesSent": int(figures.get("delayedNoticesSent", 0)),
            "bounced": int(figures.get("bounced", 0)),
            "delivered": int(figures.get("delivered", 0)),
            "oldestDeferredAgeSeconds": int(figures.get("oldestDeferredAgeSeconds", 0)),
            "lastErrors": [{k: e[k] for k in ("destination", "error", "time") if k in e}
                           for e in (figures.get("lastErrors") or [])[:20]],
            "lastBounces": [{k: b[k] for k in ("sender", "recipient", "reason", "time") if k in b}
                            for b in (figures.get("lastBounces") or [])[:10]],
        },
        "incoming": incoming(domain, observed.queue),
        "dnsRecords": dns_records(domain, observed.dkim_public_key, observed.autoconfig_address),
    }
    if observed.mailstore_shards:
        status["shards"] = shard_figures(observed.mailstore_shards)
    if observed.queue_replicas:
        status["queueReplicas"] = queue_replica_figures(observed.queue_replicas, domain.spec.queue.replicas)
    if observed.endpoints:
        status["endpoints"] = dict(sorted(observed.endpoints.items()))
    return status


# ---------------------------------------------------------------------------
# Mailbox decisions
# ---------------------------------------------------------------------------

def mailbox_ready(mailbox: Mailbox, domain: MailDomain | None, observed: Observed) -> Decision:
    spec = mailbox.spec
    address = spec.address.lower()
    if domain is None:
        return FALSE, "DomainNotFound", (
            f"No MailDomain in this namespace serves {mailbox.address_domain}; "
            "create one or fix the address.")
    ref = spec.password_secret_ref
    keys = observed.secret_keys.get(ref.name)
    if keys is None:
        return FALSE, "PasswordSecretMissing", f"Secret {ref.name} does not exist; {address} cannot log in."
    if ref.key not in keys:
        return FALSE, "PasswordSecretMissing", (f"Secret {ref.name} has no usable key {ref.key!r} (missing, "
                                                f"empty or a malformed hash); {address} cannot log in.")
    if spec.suspended:
        return FALSE, "Suspended", f"{address} is suspended: it cannot log in and mail to it is refused."
    problem = mailrules.sieve_problem(mailbox)
    if problem is not None:
        found = ((observed.mailstore or {}).get("mailboxes") or {}).get(address)
        if found is None:  # the mailstore has not said what runs
            still = "the previous valid script, if there was one, stays in use until it is fixed"
        elif (found.get("rules") or {}).get("adminScript"):
            still = "the previous valid script still runs until it is fixed"
        else:
            still = "no administrator's script runs until it is fixed"
        return FALSE, "InvalidSieve", f"spec.sieve does not compile: {problem.human()}; {still}."
    auto = mailrules.auto_reply_problem(mailbox)
    if auto is not None:
        return FALSE, "InvalidAutoReply", f"spec.autoReply: {auto}; no auto-reply is sent."
    if observed.mailstore is None:
        return FALSE, "MailstoreUnavailable", "The mailstore's status cannot be read."
    if address not in (observed.mailstore.get("mailboxes") or {}):
        return FALSE, "Provisioning", f"Waiting for the mailstore to load {address} from the directory."
    return TRUE, "Ready", f"{address} receives mail and its owner can log in."


_UNHONOURED = {"PinOutOfRange", "ShardRemoved"}


def mailbox_placed(mailbox: Mailbox, domain: MailDomain, observed: Observed) -> Decision:
    """``Placed`` (domains with shards only): True when the Mailbox is on the
    shard it should be (its pin, where it was recorded, or its hashed shard);
    False when a pin names no shard (``PinOutOfRange``) or its shard was
    removed (``ShardRemoved``: its earlier mail stays on that shard's volume).
    ``ShardRemoved`` is seen once, by the pass that re-placed the mailbox; it
    stays until the owner pins the mailbox (the explicit act that settles it)."""
    address = mailbox.spec.address.lower()
    placed = observed.placements.get(address) or placement.place(
        address, domain.spec.mailstore.shards, pin=mailbox.spec.shard, recorded=observed.shards.get(address))
    before = get_condition(mailbox.status, "Placed")
    if (placed.reason == "Recorded" and before and before.get("reason") == "ShardRemoved"
            and mailbox.status.get("shard") == placed.shard):
        return FALSE, "ShardRemoved", before.get("message", "")
    return (FALSE if placed.reason in _UNHONOURED else TRUE), placed.reason, placed.message + "."


def mailbox_moving(mailbox: Mailbox, domain: MailDomain, observed: Observed) -> Decision:
    """``Moving`` (domains with shards only): True from the moment a pin names
    another shard until the directory names it (reason: the step the move is
    at, ``correo_operator.moves``); then False with ``Moved`` while the old
    copy is kept, ``NotMoving`` otherwise."""
    address = mailbox.spec.address.lower()
    seen = observed.moves.get(address)
    if seen:
        return (TRUE if seen.get("moving") else FALSE), str(seen.get("reason")), str(seen.get("message", "")) + "."
    placed = observed.placements.get(address) or placement.place(
        address, domain.spec.mailstore.shards, pin=mailbox.spec.shard, recorded=observed.shards.get(address))
    if placed.moving_to is not None:
        return TRUE, "Pending", (f"moving from shard {placed.shard} to shard {placed.moving_to}: waiting for the "
                                 "move to start.")
    return FALSE, "NotMoving", f"On shard {placed.shard}."


def _usage(mailbox: Mailbox, domain: MailDomain | None, observed: Observed) -> dict:
    address = mailbox.spec.address.lower()
    quota = None
    if mailbox.spec.quota:
        quota = parse_bytes(mailbox.spec.quota)
    elif domain is not None:
        quota = parse_bytes(domain.spec.default_quota)
    found = ((observed.mailstore or {}).get("mailboxes") or {}).get(address) or {}
    used = int(found.get("bytes", 0))
    quota = int(found.get("quotaBytes") or quota or 0)
    usage = {"messages": int(found.get("messages", 0)), "bytes": used, "used": format_bytes(used)}
    if quota:
        usage |= {"quotaBytes": quota, "quota": format_bytes(quota),
                  "quotaUsedPercent": min(100, int(used * 100 // quota))}
    return usage


def quota_exceeded(usage: Mapping[str, Any]) -> Decision:
    quota = usage.get("quotaBytes")
    if not quota:
        return UNKNOWN, "QuotaUnknown", "The quota is not known yet."
    if usage["bytes"] >= quota:
        return TRUE, "QuotaExceeded", (f"{usage['used']} of {usage['quota']} used: new mail is refused "
                                       "until messages are deleted.")
    return FALSE, "WithinQuota", f"{usage['used']} of {usage['quota']} used ({usage['quotaUsedPercent']}%)."


def mailbox_status(mailbox: Mailbox, domain: MailDomain | None, *, observed: Observed, now: datetime) -> dict:
    """The whole ``status`` of a Mailbox; ``domain`` is its MailDomain or None."""
    previous = mailbox.status.get("conditions")
    gen = mailbox.metadata.generation
    usage = _usage(mailbox, domain, observed)
    address = mailbox.spec.address.lower()
    sender = ((observed.queue or {}).get("senders") or {}).get(address) or {}
    delivery: dict[str, Any] = {
        "deferred": int(sender.get("deferred", 0)),
        "bounced": int(sender.get("bounced", 0)),
        "delayedNoticesSent": int(sender.get("delayedNoticesSent", 0)),
    }
    if sender.get("lastDelivery"):
        delivery["lastDelivery"] = sender["lastDelivery"]
    if sender.get("lastBounce"):
        b = sender["lastBounce"]
        delivery["lastBounce"] = {k: b[k] for k in ("recipient", "reason", "time") if k in b}
    found = ((observed.mailstore or {}).get("mailboxes") or {}).get(address) or {}
    incoming: dict[str, Any] = {"refused": int(found.get("refused") or 0), "junk": int(found.get("junk") or 0)}
    if found.get("lastRefusal"):
        incoming["lastRefusal"] = {k: found["lastRefusal"][k] for k in ("time", "reason") if k in found["lastRefusal"]}
    status: dict[str, Any] = {
        "observedGeneration": gen,
        "conditions": [
            condition("Ready", mailbox_ready(mailbox, domain, observed), gen, now, previous),
            condition("QuotaExceeded", quota_exceeded(usage), gen, now, previous),
        ],
        "usage": usage,
        "incoming": incoming,
        "delivery": delivery,
        "rules": mailbox_rules(mailbox, found, now),
    }
    if domain is not None:
        status["domain"] = domain.name
        if domain.spec.mailstore.shards > 1:
            status["conditions"].append(
                condition("Placed", mailbox_placed(mailbox, domain, observed), gen, now, previous))
            status["conditions"].append(
                condition("Moving", mailbox_moving(mailbox, domain, observed), gen, now, previous))
            if address in observed.shards:
                status["shard"] = observed.shards[address]
    return status


def mailbox_rules(mailbox: Mailbox, found: Mapping[str, Any], now: datetime) -> dict:
    """``status.rules``: what the mailstore says runs (it knows the user's script,
    a previous admin script kept, and the errors at delivery); from the spec
    alone while it has not said."""
    reported = found.get("rules")
    if reported is not None:
        rules = {k: reported[k] for k in ("adminScript", "userScript", "autoReply", "errors") if k in reported}
        if reported.get("lastError"):
            rules["lastError"] = {k: reported["lastError"][k] for k in ("time", "script", "message")
                                  if k in reported["lastError"]}
        return rules
    if found:  # the mailstore has the mailbox, and no rules for it
        return {"adminScript": False, "autoReply": False, "errors": 0}
    entry = mailrules.auto_reply_entry(mailbox)
    return {"adminScript": bool(mailbox.spec.sieve and mailbox.spec.sieve.strip())
            and mailrules.sieve_problem(mailbox) is None,
            "autoReply": entry is not None and autoreply.window(entry, now.timestamp())[0],
            "errors": 0}


# ---------------------------------------------------------------------------
# Transitions worth an Event
# ---------------------------------------------------------------------------

# (condition type, new status) → event type; only these transitions are told.
_EVENTFUL = {
    ("Ready", TRUE): "Normal", ("Ready", FALSE): "Warning",
    ("Delivering", FALSE): "Warning", ("Delivering", TRUE): "Normal",
    ("QuotaExceeded", TRUE): "Warning", ("QuotaExceeded", FALSE): "Normal",
    ("Placed", FALSE): "Warning", ("Placed", TRUE): "Normal",
    ("Moving", TRUE): "Normal", ("Moving", FALSE): "Normal",
}


# Reasons that are a normal step, not news: a new Mailbox waits for the
# mailstore to load the directory for a second or two.
_QUIET_REASONS = {"Provisioning", "QuotaUnknown"}


def transitions(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Events for what changed: (event type, reason, message).

    A condition that changes status (Ready, Delivering, QuotaExceeded) is told,
    except quiet steps (``Provisioning``).  On first sight only what needs
    attention is told (Ready, or anything unhealthy), not that all is well.
    More bounces than before are told with the latest one; so are more delay
    notices.
    """
    events: list[tuple[str, str, str]] = []
    for cond in new.get("conditions") or []:
        before = get_condition(old, cond["type"])
        if before is not None and before.get("status") == cond["status"]:
            continue
        kind = _EVENTFUL.get((cond["type"], cond["status"]))
        if kind is None or cond["reason"] in _QUIET_REASONS:
            continue
        if before is None and kind == "Normal" and cond["type"] != "Ready":
            continue  # "within quota", "delivering": not news on first sight
        events.append((kind, cond["reason"], cond["message"]))
    for section in ("queue", "delivery"):
        before, after = (old or {}).get(section) or {}, new.get(section) or {}
        if after.get("bounced", 0) > before.get("bounced", 0):
            last = (after.get("lastBounces") or [None])[0] if section == "queue" else after.get("lastBounce")
            detail = f": {last['recipient']}: {last['reason']}" if last else ""
            events.append(("Warning", "Bounced",
                           f"{after['bounced'] - before.get('bounced', 0)} recipient(s) returned as failed{detail}"))
        if after.get("delayedNoticesSent", 0) > before.get("delayedNoticesSent", 0):
            events.append(("Warning", "DelayNoticeSent",
                           f"{after['delayedNoticesSent'] - before.get('delayedNoticesSent', 0)} delay notice(s) "
                           "sent to the sender"))
    return events


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
