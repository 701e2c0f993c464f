"""``correo status``: the status documents the operator would write on
Kubernetes, computed for the local stack by the same code
(``correo_operator.status``) from the services' ``/status`` endpoints.

The default view is a table like ``kubectl get maildomains,mailboxes``;
``-o json``/``-o yaml`` print a ``List`` of the resources with their
``status``, plus the local ``endpoints``; ``--dns`` prints each MailDomain's
``status.dnsRecords`` as zone-file lines (:mod:`correo_operator.zonefile`).
"""
from __future__ import annotations

import dataclasses
import json
import sys
import urllib.request
from datetime import datetime
from typing import Any

import yaml
from correo_server.localstate import NotRunning

from .. import loading, model
from .. import status as statusmod
from .. import zonefile
from . import mover, stack
from .layout import Layout, read_json, require_running, write_json
from .supervisor import ORDER


def fetch_json(url: str, timeout: float = 3.0) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def _flat_endpoints(state: dict) -> dict[str, str]:
    ep = state.get("endpoints") or {}
    out = {name: ep[name] for name in stack.PUBLIC if isinstance(ep.get(name), str)}
    for service in ("relay", "queue", "mailstore"):
        if (ep.get(service) or {}).get("http"):
            out[f"{service}Status"] = ep[service]["http"] + "/status"
    if (ep.get("autoconfig") or {}).get("public"):
        out["autoconfig"] = ep["autoconfig"]["public"]
    return out


def _secret_keys(keys: dict[str, frozenset[str]], domain: model.MailDomain | None) -> dict[str, frozenset[str]]:
    keys = dict(keys)
    if domain is not None and domain.tls_secret:  # the local runtime supplies a certificate (given or self-signed)
        keys[domain.tls_secret] = frozenset({"tls.crt", "tls.key"})
    return keys


def _as_running(doc: loading.Document, generations: dict, previous: dict[str, Any]) -> tuple[dict, Any]:
    """The document as it would be on the API (its generation, its last status),
    as a plain object for the output and as the typed resource for ``status``."""
    key = f"{doc.kind}/{doc.namespace}/{doc.name}"
    generation = (generations.get(key) or {}).get("generation", 1)
    obj = json.loads(json.dumps(doc.obj))
    obj["metadata"]["generation"] = generation
    resource = dataclasses.replace(doc.resource, metadata=dataclasses.replace(doc.resource.metadata,
                                                                             generation=generation))
    if key in previous:
        obj["status"] = previous[key]
        resource = dataclasses.replace(resource, status=previous[key])
    return obj, resource


def compute(layout: Layout, state: dict, loaded: loading.Loaded, secret_keys: dict[str, dict[str, frozenset[str]]],
            now: datetime) -> list[dict]:
    """Every MailDomain and Mailbox of the local stack with its status;
    ``secret_keys``: usable keys of the Secrets, by namespace and name."""
    ep = state.get("endpoints") or {}
    docs = {s: fetch_json((ep.get(s) or {}).get("http", "") + "/status") if ep.get(s) else None for s in ORDER}
    alive = set((state.get("services") or {}).keys())
    shards = int(state.get("shards") or 1)
    shard_docs: tuple = ()
    if shards > 1:  # each shard answers for its own mailboxes
        shard_docs = tuple(fetch_json(ep[f"mailstore-{i}"]["http"] + "/status")
                           if f"mailstore-{i}" in ep and f"mailstore-{i}" in alive else None for i in range(shards))
        docs["mailstore"] = statusmod.merge_shards(shard_docs)
        alive.add("mailstore")
    queues = int(state.get("queues") or 1)
    queue_docs: tuple = ()
    if queues > 1:  # each replica has its own spool: the figures are added up
        queue_docs = tuple(fetch_json(ep[f"queue-{i}"]["http"] + "/status")
                           if f"queue-{i}" in ep and f"queue-{i}" in alive else None for i in range(queues))
        docs["queue"] = statusmod.merge_queue_replicas(queue_docs)
        alive.add("queue")
    availability = {s: ((1 if s in alive and docs[s] is not None else 0), 1) for s in ORDER}
    placed = stack.previous_shards(layout) if shards > 1 else {}
    dkim = stack.dkim_public_keys(layout)
    previous = (read_json(layout.status_file) or {}).get("status", {})
    generations = state.get("generations") or {}
    items: list[dict] = []
    observed_for: dict[model.MailDomain, statusmod.Observed] = {}
    for d in sorted(loaded.domains, key=lambda d: (d.namespace, d.name)):
        obj, domain = _as_running(d, generations, previous)
        observed = observed_for[domain] = statusmod.Observed(
            relay=docs["relay"], queue=docs["queue"], mailstore=docs["mailstore"], availability=availability,
            secret_keys=_secret_keys(secret_keys.get(d.namespace, {}), domain),
            dkim_public_key=dkim.get(domain.domain), endpoints=_flat_endpoints(state),
            mailstore_shards=shard_docs if domain.spec.mailstore.shards > 1 else (), shards=placed,
            queue_replicas=queue_docs if domain.spec.queue.replicas > 1 else (),
            moves=mover.status_of(layout) if shards > 1 else {})
        obj["status"] = statusmod.domain_status(domain, loaded.mailboxes_of(domain), observed=observed, now=now)
        items.append(obj)
    for m in sorted(loaded.mailboxes, key=lambda m: (m.namespace, m.name)):
        obj, mailbox = _as_running(m, generations, previous)
        domain = model.domain_of(mailbox, observed_for)
        observed = observed_for[domain] if domain else statusmod.Observed(
            queue=docs["queue"], mailstore=docs["mailstore"],
            secret_keys=_secret_keys(secret_keys.get(m.namespace, {}), None))
        obj["status"] = statusmod.mailbox_status(mailbox, domain, observed=observed, now=now)
        items.append(obj)
    write_json(layout.status_file, {"status": {f"{o['kind']}/{o['metadata']['namespace']}/{o['metadata']['name']}":
                                               o["status"] for o in items}})
    return items


def _cond(obj: dict, type_: str) -> dict:
    return statusmod.get_condition(obj.get("status"), type_) or {}


def domain_reason(obj: dict) -> str:
    """The REASON column of a MailDomain: what most needs attention, as
    kubectl's STATUS column shows a pod's worst state.  The service's own
    trouble first (Ready's reason when not Ready), then the mail's (the
    Delivering condition's ``DeliveryDelayed`` or ``Retrying``), else Ready."""
    ready, delivering = _cond(obj, "Ready"), _cond(obj, "Delivering")
    if ready.get("status") != "True":
        return ready.get("reason", "")
    if delivering.get("status") == "False" or delivering.get("reason") == "Retrying":
        return delivering.get("reason", "")
    return ready.get("reason", "")


def mailbox_reason(obj: dict) -> str:
    """The REASON column of a Mailbox: Ready's reason when not Ready, then a
    full quota, then mail it sent that waits for a retry (``Retrying``)."""
    ready = _cond(obj, "Ready")
    if ready.get("status") != "True":
        return ready.get("reason", "")
    if _cond(obj, "Moving").get("status") == "True":
        return "Moving"
    if _cond(obj, "QuotaExceeded").get("status") == "True":
        return "QuotaExceeded"
    if obj.get("status", {}).get("delivery", {}).get("deferred"):
        return "Retrying"
    return ready.get("reason", "")


def table(items: list[dict]) -> str:
    """``kubectl get``-like tables, with a line for every condition that needs
    attention (figures show ``?`` when the queue could not be read)."""
    def fmt(rows: list[list[str]]) -> list[str]:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]

    domains = [o for o in items if o["kind"] == "MailDomain"]
    boxes = [o for o in items if o["kind"] == "Mailbox"]
    queue_known = all(_cond(o, "QueueAvailable").get("status") == "True" for o in domains)

    def figure(value) -> str:
        return str(value) if queue_known else "?"

    out: list[str] = []
    rows = [["NAMESPACE", "MAILDOMAIN", "DOMAIN", "READY", "DEFERRED", "BOUNCED", "REASON"]]
    for o in domains:
        q = o["status"].get("queue", {})
        rows.append([o["metadata"]["namespace"], o["metadata"]["name"], o["spec"]["domain"],
                     _cond(o, "Ready").get("status", "?"), figure(q.get("deferred", 0)), figure(q.get("bounced", 0)),
                     domain_reason(o)])
    out += fmt(rows)
    for o in domains:
        down = [s["shard"] for s in o["status"].get("shards", []) if not s.get("ready")]
        if o["status"].get("shards"):
            out.append(f"  {o['metadata']['name']}: {len(o['status']['shards'])} mailstore shards"
                       + (f", down: {', '.join(map(str, down))}" if down else ", all ready"))
        replicas = o["status"].get("queueReplicas") or []
        if replicas:  # one line: each replica's readiness and what it holds
            parts = [f"{r['replica']}: {'ready' if r.get('ready') else 'down'}, {r.get('messages', 0)} message(s)"
                     + (", draining" if r.get("draining") else "") for r in replicas]
            out.append(f"  {o['metadata']['name']}: {len(replicas)} queue replicas ({'; '.join(parts)})")
        for c in o["status"]["conditions"]:
            if c["status"] != "True" or c["reason"] == "Retrying":  # retrying: no alarm yet, but say why
                out.append(f"  {o['metadata']['name']}: {c['type']}={c['status']} ({c['reason']}): {c['message']}")
        out += refusal_lines(o)
    out.append("")
    sharded = any("shard" in o["status"] for o in boxes)  # a SHARD column only when there are shards
    rows = [["NAMESPACE", "MAILBOX", "ADDRESS", "READY", "USED", "QUOTA", "MESSAGES", "JUNK", "DEFERRED", "BOUNCED",
             "REASON"] + (["SHARD"] if sharded else [])]
    for o in boxes:
        u, dl = o["status"].get("usage", {}), o["status"].get("delivery", {})
        rows.append([o["metadata"]["namespace"], o["metadata"]["name"], o["spec"]["address"],
                     _cond(o, "Ready").get("status", "?"), u.get("used", "0"), u.get("quota", "?"),
                     str(u.get("messages", 0)), str(o["status"].get("incoming", {}).get("junk", 0)),
                     figure(dl.get("deferred", 0)), figure(dl.get("bounced", 0)), mailbox_reason(o)]
                    + ([str(o["status"].get("shard", "?"))] if sharded else []))
    out += fmt(rows)
    for o in boxes:
        address = o["spec"]["address"]
        ready, quota = _cond(o, "Ready"), _cond(o, "QuotaExceeded")
        if ready.get("status") == "False":
            out.append(f"  {address}: {ready['reason']}: {ready['message']}")
        if quota.get("status") == "True":
            out.append(f"  {address}: QuotaExceeded: {quota['message']}")
        placed = _cond(o, "Placed")
        if placed.get("status") == "False":
            out.append(f"  {address}: {placed['reason']}: {placed['message']}")
        moving = _cond(o, "Moving")
        if moving.get("status") == "True" or moving.get("reason") == "Moved":
            out.append(f"  {address}: {'Moving' if moving['status'] == 'True' else 'Moved'} "
                       f"({moving['reason']}): {moving['message']}")
        refusal = o["status"].get("incoming", {}).get("lastRefusal")
        if refusal:
            out.append(f"  {address}: incoming mail refused ({o['status']['incoming']['refused']}x), "
                       f"last: {refusal.get('reason')}")
        last = o["status"].get("delivery", {}).get("lastBounce")
        if last:
            out.append(f"  {address}: last bounce {last.get('recipient')}: {last.get('reason')}")
    if any(o["status"].get("dnsRecords") for o in domains):
        out += ["", "DNS records to publish: correo status --dns"]
    return "\n".join(out) + "\n"


def dns_zone(items: list[dict]) -> str:
    """Every MailDomain's ``status.dnsRecords`` as zone-file lines, a section per zone."""
    out = []
    for o in items:
        if o["kind"] != "MailDomain" or not o["status"].get("dnsRecords"):
            continue
        spec = o["spec"]
        zones = [spec["domain"], *sorted(spec.get("aliasDomains") or [])]
        out.append(zonefile.render(o["status"]["dnsRecords"], zones, title=(
            f"MailDomain {o['metadata'].get('namespace', 'default')}/{o['metadata']['name']}: "
            "the DNS records to publish")))
    return "\n".join(out)


def _read_objects(path: str) -> list[dict]:
    """MailDomains from ``kubectl get ... -o json|yaml`` output: a List, one object, or YAML documents."""
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    objects = []
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict):
            objects += doc.get("items") or [] if doc.get("kind", "").endswith("List") else [doc]
    return [o for o in objects if isinstance(o, dict) and o.get("kind") == "MailDomain"]


def refusal_lines(domain: dict) -> list[str]:
    """What the relay refused for a MailDomain: by reason, and the last one."""
    inc = domain["status"].get("incoming") or {}
    if not inc.get("refused"):
        return []
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(inc.get("refusedByReason", {}).items(), key=lambda kv: -kv[1]))
    lines = [f"  {domain['metadata']['name']}: refused {inc['refused']} on arrival ({reasons})"]
    last = inc.get("lastRefusal")
    if last:
        who = " ".join(x for x in (f"from <{last['sender']}>" if last.get("sender") else "",
                                   f"to <{last['recipient']}>" if last.get("recipient") else "",
                                   f"client {last['client']}" if last.get("client") else "") if x)
        lines.append(f"    last: {last.get('reason')} {who}: {last.get('reply', '')}")
    return lines


def main(args) -> int:
    if getattr(args, "from_file", None):
        if not getattr(args, "dns", False):
            print("correo status: --from goes with --dns", file=sys.stderr)
            return 2
        try:
            found = _read_objects(args.from_file)
        except (OSError, yaml.YAMLError) as exc:
            print(f"correo status: cannot read {args.from_file}: {exc}", file=sys.stderr)
            return 1
        domains = [o for o in found if (o.get("status") or {}).get("dnsRecords")]
        if not domains:
            print(f"correo status: no MailDomain with status.dnsRecords in {args.from_file} "
                  "(has the operator reconciled it yet?)", file=sys.stderr)
            return 1
        sys.stdout.write(dns_zone(domains))
        return 0
    layout = Layout.at(args.data)
    try:
        state = require_running(layout)
    except NotRunning as exc:
        print(f"correo status: {exc}", file=sys.stderr)
        return 1
    applied = stack.read_applied(layout)
    if applied is None:
        print(f"correo status: {layout.applied_file} is missing; restart `correo up`", file=sys.stderr)
        return 1
    on_disk = loading.load_paths(state["paths"])
    if on_disk.errors:
        print(f"correo status: warning: the YAML in {', '.join(state['paths'])} has {len(on_disk.errors)} "
              "error(s) and was not applied (see `correo validate`); this is the status of what runs.",
              file=sys.stderr)
    loaded, secret_keys = applied
    items = compute(layout, state, loaded, secret_keys, statusmod.now_utc())
    if getattr(args, "dns", False):
        sys.stdout.write(dns_zone(items))
        return 0
    if args.output == "table":
        sys.stdout.write(table(items))
        return 0
    doc = {"apiVersion": "v1", "kind": "List", "items": items, "endpoints": state.get("endpoints", {})}
    if args.output == "json":
        print(json.dumps(doc, indent=2, sort_keys=False))
    else:
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return 0
