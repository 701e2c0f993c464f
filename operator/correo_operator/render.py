"""Render: MailDomain + Mailboxes + Secrets → the Kubernetes objects that run it.

``render(domain, mailboxes, secrets)`` is pure: no I/O, no clock, no
randomness; the same input gives the same bytes.  It is what ``correo render``
prints, what the operator applies, and — through :func:`server_config` and
:func:`directory_entries` — what ``correo up`` runs locally.

The two files the servers read, ``correo.yaml`` (ConfigMap) and
``directory.yaml`` (Secret), are written with ``correo_server.config`` and
``correo_server.directory``: their format is defined there, once.

Objects, for a MailDomain named ``<base>`` in namespace ``<ns>``:

* ConfigMap ``<base>-config`` (``correo.yaml``) and Secret ``<base>-directory``
  (``directory.yaml``: password hashes only).
* relay: Deployment, Service (25, 587, 465 → 2525, 2587, 2465), PodDisruptionBudget.
* queue: StatefulSet with a spool volumeClaimTemplate and a headless Service
  (LMTP 2424, HTTP 8082); with ``spec.queue.replicas`` N > 1, N pods each
  with its own spool (replica i is ``<base>-queue-i.<base>-queue.<ns>.svc``,
  listed in ``queue.replicas`` for the relay, which hands each message to
  any ready one), and during a scale-down the leaving pods are kept until
  they have drained (``queue_pods``).
* mailstore: StatefulSet with a mail volumeClaimTemplate, a Service for
  clients (143, 993, 110, 995) and a headless internal one (LMTP 2425, HTTP 8083).
* autoconfig: Deployment and Service (80 → 2080) serving client
  autoconfiguration and the MTA-STS policy (``correo serve autoconfig``: it
  mounts only the ConfigMap), and, when ``spec.autoconfig.ingress`` is set, an
  Ingress for ``autoconfig.``, ``autodiscover.`` and ``mta-sts.`` of every
  domain name, its certificate from cert-manager (``issuerRef``).
* with ``spec.mailstore.shards`` N > 1: the mailstore StatefulSet has N
  replicas (shard i is pod ``<base>-mailstore-i``, reached by the queue at
  ``<base>-mailstore-i.<base>-mailstore-internal.<ns>.svc``), and a proxy
  Deployment ``<base>-proxy`` (``correo serve proxy``) behind the client
  Service, which keeps its name; both mount the proxy credential from the
  Secret ``<base>-proxy`` the operator generates (``proxykeys``).
* NetworkPolicies admitting only the flows above (and mailstore → queue LMTP:
  mail rules send vacation replies and redirects through the queue).
* with ``spec.filter.rspamd.managed``: rspamd's Deployment, Service,
  ConfigMap and NetworkPolicy (``managedrspamd``).

``spec.filter`` becomes ``relay.filter`` (``filters``); the relay and the
queue mount the domain's SRS keys (Secret ``<base>-srs``, made by ``srskeys``).

Every pod mounts one projected volume at ``/etc/correo`` holding the config
file, the directory, the TLS pair (``tls/``), the DKIM key (``dkim/``) and
the smarthost credentials (``smarthost/``), so ``correo serve X --config
/etc/correo`` finds everything.  A Mailbox change only changes the directory
Secret; the servers reload it without a restart.  A change of the domain's
configuration rolls the pods through a hash annotation.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Any, Mapping

from correo_server import config as cfgmod
from correo_server import directory as dirmod
from correo_server import passwords

from .model import (API_VERSION, AutoconfigIngress, IssuerRef, MailDomain, Mailbox, MailstoreStorage, QueueStorage,
                    belongs)
from . import filters, managedrspamd
from .quantity import parse_bytes
from . import mailrules, placement, secretdata

DEFAULT_IMAGE = "ghcr.io/correo-dev/correo:0.1.0"
CONFIG_MOUNT = "/etc/correo"
UID = 10001
MANAGED_BY = "correo"
# The labels of every child (the recommended app.kubernetes.io set); the
# operator finds a MailDomain's children by instance and managed-by.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
PORTS = cfgmod.DEFAULT_PORTS
# Service port → container port
RELAY_SERVICE_PORTS = [("smtp", 25, PORTS["smtp"]), ("submission", 587, PORTS["submission"]),
                       ("smtps", 465, PORTS["smtps"])]
MAILSTORE_SERVICE_PORTS = [("imap", 143, PORTS["imap"]), ("imaps", 993, PORTS["imaps"]),
                           ("pop3", 110, PORTS["pop3"]), ("pop3s", 995, PORTS["pop3s"]),
                           ("managesieve", 4190, PORTS["managesieve"])]
AUTOCONFIG_SERVICE_PORTS = [("http", 80, PORTS["autoconfig"])]


PROXY_SECRET_KEY = "proxy.secret"
PROXY_SECRET_FILE = "proxy/secret"  # in the configuration folder

# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------

def dkim_secret_name(domain: MailDomain) -> str:
    return f"{domain.name}-dkim"


def proxy_secret_name(domain: MailDomain) -> str:
    """The Secret with the proxy's credential (``proxy.secret``), made by the
    operator (``proxykeys``) when the domain has shards."""
    return f"{domain.name}-proxy"


def shard_host(domain: MailDomain, shard: int) -> str:
    """The DNS name of a mailstore shard's pod (StatefulSet pod + headless Service)."""
    b, ns = domain.name, domain.namespace
    return f"{b}-mailstore-{shard}.{b}-mailstore-internal.{ns}.svc"


def queue_host(domain: MailDomain, replica: int) -> str:
    """The DNS name of a queue replica's pod (StatefulSet pod + headless Service)."""
    b, ns = domain.name, domain.namespace
    return f"{b}-queue-{replica}.{b}-queue.{ns}.svc"


def names(domain: MailDomain) -> dict[str, str]:
    b = domain.name
    return {
        "config": f"{b}-config", "directory": f"{b}-directory", "dkim": dkim_secret_name(domain),
        "relay": f"{b}-relay", "queue": f"{b}-queue", "mailstore": f"{b}-mailstore",
        "mailstore_internal": f"{b}-mailstore-internal",
        "autoconfig": f"{b}-autoconfig", "autoconfig_tls": f"{b}-autoconfig-tls",
        "proxy": f"{b}-proxy", "proxy_secret": proxy_secret_name(domain),
    }


def autoconfig_hosts(domain: MailDomain) -> list[str]:
    """The host names the autoconfig component answers on: ``mta-sts.`` and
    (unless autoconfiguration is off) ``autoconfig.`` and ``autodiscover.``
    of the domain and each alias domain."""
    prefixes = ("autoconfig", "autodiscover", "mta-sts") if domain.spec.autoconfig.enabled else ("mta-sts",)
    return [f"{p}.{name}" for name in domain.domain_names for p in prefixes]


def moves_url(domain: MailDomain, shard: int) -> str:
    """Where the operator reaches a shard's move endpoints (TLS when the
    domain has its key pair: ``correo_server.mailstore.moveport``)."""
    scheme = "https" if domain.tls_secret else "http"
    return f"{scheme}://{shard_host(domain, shard)}:{PORTS['mailstore_moves']}"


def service_urls(domain: MailDomain) -> dict[str, str]:
    """The HTTP side ports the operator reads ``/status`` from (cluster DNS)."""
    n, ns = names(domain), domain.namespace
    urls = {
        "queue": f"http://{n['queue']}.{ns}.svc:{PORTS['queue_http']}",
        "mailstore": f"http://{n['mailstore_internal']}.{ns}.svc:{PORTS['mailstore_http']}",
    }
    if domain.spec.mailstore.shards > 1:  # each shard answers for its own mailboxes
        for i in range(domain.spec.mailstore.shards):
            urls[f"mailstore-{i}"] = f"http://{shard_host(domain, i)}:{PORTS['mailstore_http']}"
    if domain.spec.queue.replicas > 1:  # each replica has its own spool
        for i in range(domain.spec.queue.replicas):
            urls[f"queue-{i}"] = queue_url(domain, i)
    return urls


def queue_url(domain: MailDomain, replica: int) -> str:
    """The side port of a queue replica (``/status``; a leaving one reports its drain there)."""
    return f"http://{queue_host(domain, replica)}:{PORTS['queue_http']}"


def referenced_secrets(domain: MailDomain, mailboxes: list[Mailbox]) -> set[str]:
    """Names of the Secrets render reads (password, TLS, smarthost, DKIM)."""
    out = {dkim_secret_name(domain)} | filters.referenced_secrets(domain)
    if domain.tls_secret:
        out.add(domain.tls_secret)
    if domain.smarthost_credentials:
        out.add(domain.smarthost_credentials.name)
    out.update(mb.spec.password_secret_ref.name for mb in mailboxes)
    return out


# ---------------------------------------------------------------------------
# The servers' configuration (shared with ``correo up``)
# ---------------------------------------------------------------------------

_SMARTHOST_TLS = {"StartTLS": "starttls", "Implicit": "implicit", "None": "none"}


def domain_entry(domain: MailDomain) -> cfgmod.Domain:
    """The ``domains[]`` entry of ``correo.yaml`` for one MailDomain."""
    spec = domain.spec
    retry = spec.queue.retry
    smart = spec.relay.smarthost
    smarthost = None
    if smart:
        cred = smart.credentials_secret_ref
        smarthost = cfgmod.Smarthost(
            host=smart.host, port=smart.port, tls=_SMARTHOST_TLS[smart.tls],
            username_file="smarthost/username" if cred else None,
            password_file="smarthost/password" if cred else None,
        )
    return cfgmod.Domain(
        name=domain.domain,
        aliases=tuple(sorted(a.lower() for a in spec.alias_domains)),
        hostname=domain.hostname,
        dkim_selector=spec.dkim.selector,
        dkim_key_file=f"dkim/{domain.domain}.key" if spec.dkim.enabled else None,
        default_quota_bytes=parse_bytes(spec.default_quota),
        srs_key_file=filters.srs_key_file(domain),
        retry=cfgmod.RetryPolicy(
            initial_delay_seconds=retry.initial_delay_seconds,
            max_delay_seconds=retry.max_delay_seconds,
            backoff_factor=float(retry.backoff_factor),
            warn_after_seconds=retry.warn_after_seconds,
            give_up_after_seconds=retry.give_up_after_seconds,
        ),
        smarthost=smarthost,
        recipient_delimiter=spec.recipient_delimiter,
        catch_all=_canonical_address(spec.catch_all, domain) if spec.catch_all else None,
        display_name=spec.autoconfig.display_name or "",
        autoconfig=spec.autoconfig.enabled,
        mta_sts=cfgmod.MtaStsPolicy(mode=spec.mta_sts.mode, max_age_seconds=spec.mta_sts.max_age_seconds,
                                    mx=domain.mta_sts_mx),
    )


def _canonical_address(address: str, domain: MailDomain) -> str:
    """``user@alias-domain`` → ``user@domain`` (the directory's form)."""
    local, _, name = address.rpartition("@")
    return f"{local}@{domain.domain}" if name.lower() in domain.domain_names else address


def relay_limits(domain: MailDomain) -> dict[str, int]:
    relay = domain.spec.relay
    return {
        "max_message_bytes": parse_bytes(relay.max_message_size),
        "max_recipients": relay.max_recipients,
        "rate_limit_messages": relay.rate_limit.messages,
        "rate_limit_period_seconds": relay.rate_limit.period_seconds,
    }


def server_config(domain: MailDomain, queue_pods: int | None = None) -> cfgmod.ServerConfig:
    """``correo.yaml`` for the pods of one MailDomain (cluster addresses).
    ``queue_pods``: queue pods kept while the ones past ``spec.queue.replicas``
    drain; the replicas that stay are then listed even if only one is (a pod
    past the list knows it is leaving)."""
    n, ns = names(domain), domain.namespace
    queues = domain.spec.queue.replicas
    listed = queues > 1 or (queue_pods or 0) > queues
    limits = relay_limits(domain)
    store = domain.spec.mailstore
    return cfgmod.ServerConfig(
        name=domain.name,
        hostname=domain.hostname,
        domains=(domain_entry(domain),),
        tls=cfgmod.TLSFiles() if domain.tls_secret else None,
        relay=cfgmod.RelayConfig(
            queue=cfgmod.Listen(f"{n['queue']}.{ns}.svc", PORTS["queue_lmtp"]), **limits,
            filter=filters.filter_config(domain),
            mailstore_http=cfgmod.Listen(f"{n['mailstore_internal']}.{ns}.svc", PORTS["mailstore_http"]),
            queue_http=cfgmod.Listen(f"{n['queue']}.{ns}.svc", PORTS["queue_http"])),
        queue=cfgmod.QueueConfig(
            mailstore=cfgmod.Listen(f"{n['mailstore_internal']}.{ns}.svc", PORTS["mailstore_lmtp"]),
            max_message_bytes=limits["max_message_bytes"],
            # the replicas that take mail; one past the list drains into them (queuereplicas)
            replicas=tuple(cfgmod.QueueReplica(host=queue_host(domain, i)) for i in range(queues)) if listed else (),
        ),
        mailstore=cfgmod.MailstoreConfig(
            queue=cfgmod.Listen(f"{n['queue']}.{ns}.svc", PORTS["queue_lmtp"]),
            imap_enabled=store.imap, pop3_enabled=store.pop3, managesieve_enabled=store.imap or store.pop3,
            over_quota=store.over_quota.lower(),
            max_literal_bytes=max(limits["max_message_bytes"], 1 << 20) + (1 << 20),
            shards=tuple(cfgmod.MailstoreShard(host=shard_host(domain, i)) for i in range(store.shards))
            if store.shards > 1 else (),
            proxy_secret_file=PROXY_SECRET_FILE if store.shards > 1 else None,
        ),
        proxy=cfgmod.ProxyConfig() if store.shards > 1 else None,
    )


def _password_hash(mailbox: Mailbox, secrets: dict[str, dict]) -> str | None:
    ref = mailbox.spec.password_secret_ref
    secret = secrets.get(ref.name)
    if secret is None:
        return None
    value = secretdata.secret_value(secret, ref.key)
    if value is None:
        return None
    value = value.strip("\r\n")
    if secretdata.password_problem(value):
        return None  # empty, or a mangled hash: nobody can log in (validate and status say why)
    if passwords.is_hash(value):
        return value.strip()
    # A plaintext password: hashed here with a salt derived from where it came
    # from, so that re-rendering yields the same bytes and no churn.
    salt = passwords.stable_salt(mailbox.namespace, ref.name, ref.key, mailbox.spec.address.lower())
    return passwords.hash_password(value, salt)


def directory_entries(domain: MailDomain, mailboxes: list[Mailbox], secrets: dict[str, dict],
                      previous_scripts: Mapping[str, str] | None = None,
                      previous_shards: Mapping[str, int] | None = None) -> list[dirmod.MailboxEntry]:
    """The mailbox directory of one MailDomain (only its own Mailboxes).

    ``previous_scripts``: the admin Sieve scripts of the directory in force
    (:func:`.mailrules.scripts_in_directory`), kept for a Mailbox whose new
    ``spec.sieve`` does not compile (:func:`.mailrules.admin_script`).
    ``previous_shards``: the shards that directory records
    (:func:`.placement.shards_in_directory`), kept (:func:`.placement.place`);
    written only when the domain has more than one shard."""
    default_quota = parse_bytes(domain.spec.default_quota)
    shards = domain.spec.mailstore.shards
    entries = []
    for mb in mailboxes:
        if not belongs(mb, domain):
            continue
        spec = mb.spec
        local, _, dom = spec.address.rpartition("@")
        shard = None
        if shards > 1:
            shard = placement.place(spec.address, shards, pin=spec.shard,
                                    recorded=placement.recorded_for(spec.address, previous_shards)).shard
        entries.append(dirmod.MailboxEntry(
            address=f"{local}@{dom.lower()}",
            name=mb.name,
            display_name=spec.display_name or "",
            password_hash=_password_hash(mb, secrets),
            quota_bytes=parse_bytes(spec.quota) if spec.quota else default_quota,
            aliases=tuple(sorted(a.lower() for a in spec.aliases)),
            forward_to=tuple(sorted(spec.forward_to)),
            keep_copy=spec.keep_copy,
            suspended=spec.suspended,
            sieve=mailrules.admin_script(mb, mailrules.previous_for(mb, previous_scripts))[0],
            auto_reply=mailrules.auto_reply_entry(mb),
            shard=shard or None,
        ))
    return entries


# ---------------------------------------------------------------------------
# Kubernetes objects
# ---------------------------------------------------------------------------

def _labels(domain: MailDomain, component: str | None = None) -> dict[str, str]:
    labels = {LABEL_NAME: "correo", LABEL_INSTANCE: domain.name, LABEL_PART_OF: "correo", LABEL_MANAGED_BY: MANAGED_BY}
    if component:
        labels[LABEL_COMPONENT] = component
    return labels


def _selector(domain: MailDomain, component: str) -> dict[str, str]:
    return {LABEL_INSTANCE: domain.name, LABEL_COMPONENT: component, LABEL_NAME: "correo"}


def child_meta(domain: MailDomain, name: str, component: str | None = None) -> dict[str, Any]:
    """The metadata of a child object: labelled, and owned by the MailDomain
    (when it has a uid, i.e. it came from the API)."""
    meta: dict[str, Any] = {"name": name, "namespace": domain.namespace, "labels": _labels(domain, component)}
    uid = domain.metadata.uid
    if uid:
        meta["ownerReferences"] = [{
            "apiVersion": API_VERSION, "kind": "MailDomain", "name": domain.name,
            "uid": uid, "controller": True, "blockOwnerDeletion": True,
        }]
    return meta


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _config_volume(domain: MailDomain, component: str) -> dict:
    n = names(domain)
    sources: list[dict] = [
        {"configMap": {"name": n["config"], "items": [{"key": cfgmod.CONFIG_FILE, "path": cfgmod.CONFIG_FILE}]}},
    ]
    if component == "autoconfig":  # public documents only: no directory, no keys
        return {"name": "config", "projected": {"defaultMode": 0o440, "sources": sources}}
    sources.append(
        {"secret": {"name": n["directory"], "items": [{"key": cfgmod.DIRECTORY_FILE, "path": cfgmod.DIRECTORY_FILE}]}})
    tls = domain.tls_secret
    if tls and component in ("relay", "mailstore", "queue"):
        sources.append({"secret": {"name": tls, "optional": True, "items": [
            {"key": "tls.crt", "path": "tls/tls.crt"}, {"key": "tls.key", "path": "tls/tls.key"}]}})
    if component in ("mailstore", "proxy") and domain.spec.mailstore.shards > 1:
        sources.append({"secret": {"name": n["proxy_secret"], "items": [
            {"key": PROXY_SECRET_KEY, "path": PROXY_SECRET_FILE}]}})
    if tls and component == "proxy":
        sources.append({"secret": {"name": tls, "optional": True, "items": [
            {"key": "tls.crt", "path": "tls/tls.crt"}, {"key": "tls.key", "path": "tls/tls.key"}]}})
    if component == "relay" and domain.spec.dkim.enabled:
        sources.append({"secret": {"name": n["dkim"], "optional": True, "items": [
            {"key": "dkim.key", "path": f"dkim/{domain.domain}.key"}]}})
    if component == "relay":
        sources += filters.relay_sources(domain)
    if component == "queue":
        sources += filters.queue_sources(domain)
    cred = domain.smarthost_credentials
    if component == "queue" and cred:
        sources.append({"secret": {"name": cred.name, "items": [
            {"key": cred.username_key, "path": "smarthost/username"},
            {"key": cred.password_key, "path": "smarthost/password"}]}})
    return {"name": "config", "projected": {"defaultMode": 0o440, "sources": sources}}


def _container(domain: MailDomain, component: str, image: str, ports: list[tuple[str, int]], http_port: int,
               mounts: list[dict], resources: dict) -> dict:
    return {
        "name": component,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["serve", component, "--config", CONFIG_MOUNT],
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in ports]
                 + [{"name": "http", "containerPort": http_port, "protocol": "TCP"}],
        # argon2 checks take 19 MiB each; glibc would keep that in a malloc
        # arena per thread (250 MB RSS under load instead of 80 MB).
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "MALLOC_ARENA_MAX", "value": "2"}],
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}, *mounts],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10,
                          "timeoutSeconds": 3, "failureThreshold": 6},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5,
                           "timeoutSeconds": 3, "failureThreshold": 3},
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def _pod_spec(domain: MailDomain, component: str, container: dict) -> dict:
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
            "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": 60 if component in ("queue", "mailstore") else 30,
        "containers": [container],
        "volumes": [_config_volume(domain, component), {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }


def _template(domain: MailDomain, component: str, pod_spec: dict, config_hash: str) -> dict:
    return {
        "metadata": {"labels": _labels(domain, component),
                     "annotations": {"correo.dev/config-hash": config_hash}},
        "spec": pod_spec,
    }


def _pvc(name: str, storage: QueueStorage | MailstoreStorage, component: str, domain: MailDomain) -> dict:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage.size}}}
    if storage.storage_class_name:
        spec["storageClassName"] = storage.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "labels": _labels(domain, component)}, "spec": spec}


def _service(domain: MailDomain, name: str, component: str, ports: list[tuple[str, int, int]],
             service_type: str = "ClusterIP", headless: bool = False) -> dict:
    spec: dict[str, Any] = {
        "selector": _selector(domain, component),
        "ports": [{"name": n, "port": p, "targetPort": t, "protocol": "TCP"} for n, p, t in ports],
    }
    if headless:
        spec["clusterIP"] = "None"
        spec["publishNotReadyAddresses"] = False
    else:
        spec["type"] = service_type
        if service_type == "LoadBalancer":
            spec["externalTrafficPolicy"] = "Local"  # keep client addresses for rate limits and Received:
    return {"apiVersion": "v1", "kind": "Service", "metadata": child_meta(domain, name, component), "spec": spec}


def _netpol(domain: MailDomain, component: str, ingress: list[dict], egress: list[dict]) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": child_meta(domain, f"{domain.name}-{component}", component),
        "spec": {"podSelector": {"matchLabels": _selector(domain, component)},
                 "policyTypes": ["Ingress", "Egress"], "ingress": ingress, "egress": egress},
    }


def _tcp(*ports: int) -> list[dict]:
    return [{"protocol": "TCP", "port": p} for p in ports]


_DNS_EGRESS = {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
               "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def _network_policies(domain: MailDomain) -> list[dict]:
    relay_pods = {"podSelector": {"matchLabels": _selector(domain, "relay")}}
    queue_pods = {"podSelector": {"matchLabels": _selector(domain, "queue")}}
    mailstore_pods = {"podSelector": {"matchLabels": _selector(domain, "mailstore")}}
    anywhere_in_cluster = {"namespaceSelector": {}}  # the operator and Prometheus read the side ports
    proxy_pods = {"podSelector": {"matchLabels": _selector(domain, "proxy")}}
    sharded = domain.spec.mailstore.shards > 1
    smart = domain.spec.relay.smarthost
    # 443: receivers' MTA-STS policies (https://mta-sts.<domain>/.well-known/mta-sts.txt)
    outbound_ports = sorted({25, 443, 465, 587} | ({smart.port} if smart else set()))
    return [
        _netpol(domain, "relay",
                ingress=[{"ports": _tcp(PORTS["smtp"], PORTS["submission"], PORTS["smtps"])},
                         {"from": [anywhere_in_cluster], "ports": _tcp(PORTS["relay_http"])}],
                egress=[{"to": [queue_pods], "ports": _tcp(PORTS["queue_lmtp"])}, _DNS_EGRESS,
                        *filters.relay_egress(domain, queue_pods=queue_pods, mailstore_pods=mailstore_pods,
                                              rspamd_pods={"podSelector": {"matchLabels": _selector(
                                                  domain, managedrspamd.COMPONENT)}},
                                              queue_http=PORTS["queue_http"], mailstore_http=PORTS["mailstore_http"])]),
        # queue → queue LMTP: a leaving replica hands its messages to the others
        _netpol(domain, "queue",
                ingress=[{"from": [relay_pods, mailstore_pods, queue_pods], "ports": _tcp(PORTS["queue_lmtp"])},
                         {"from": [anywhere_in_cluster], "ports": _tcp(PORTS["queue_http"])}],
                egress=[{"to": [mailstore_pods], "ports": _tcp(PORTS["mailstore_lmtp"])},
                        {"ports": _tcp(*outbound_ports)}, _DNS_EGRESS,
                        {"to": [queue_pods], "ports": _tcp(PORTS["queue_lmtp"])}]),
        _netpol(domain, "mailstore",
                ingress=[{**({"from": [proxy_pods]} if sharded else {}),
                          "ports": _tcp(PORTS["imap"], PORTS["imaps"], PORTS["pop3"], PORTS["pop3s"],
                                        PORTS["managesieve"])},
                         {"from": [queue_pods], "ports": _tcp(PORTS["mailstore_lmtp"])},
                         {"from": [anywhere_in_cluster], "ports": _tcp(PORTS["mailstore_http"])},
                         # mailbox moves: the operator streams a mailbox from one shard to another
                         *([{"from": [anywhere_in_cluster], "ports": _tcp(PORTS["mailstore_moves"])}]
                           if sharded else [])],
                # mail rules send replies and redirects through the queue
                egress=[{"to": [queue_pods], "ports": _tcp(PORTS["queue_lmtp"])}, _DNS_EGRESS]),
        _netpol(domain, "autoconfig",  # the Ingress controller may run anywhere; nothing goes out
                ingress=[{"ports": _tcp(PORTS["autoconfig"])},
                         {"from": [anywhere_in_cluster], "ports": _tcp(PORTS["autoconfig_http"])}],
                egress=[]),
    ] + ([
        _netpol(domain, "proxy",
                ingress=[{"ports": _tcp(PORTS["imap"], PORTS["imaps"], PORTS["pop3"], PORTS["pop3s"],
                                        PORTS["managesieve"])},
                         {"from": [anywhere_in_cluster], "ports": _tcp(PORTS["proxy_http"])}],
                egress=[{"to": [mailstore_pods], "ports": _tcp(PORTS["imap"], PORTS["pop3"], PORTS["managesieve"])},
                        _DNS_EGRESS]),
    ] if sharded else [])


def _statefulset(domain: MailDomain, component: str, storage: QueueStorage | MailstoreStorage,
                 service_name: str, volume: str, container: dict, config_hash: str, replicas: int = 1,
                 parallel: bool | None = None) -> dict:
    """A StatefulSet whose data lives on a volumeClaimTemplate (one volume per
    pod: a shard each); the volumes are kept or deleted with the MailDomain per
    ``reclaimPolicy``, and kept when it scales down (the mail is still there
    when the shard comes back)."""
    retention = "Delete" if domain.spec.reclaim_policy == "Delete" else "Retain"
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": child_meta(domain, names(domain)[component], component),
        "spec": {"replicas": replicas, "serviceName": service_name,
                 # shards are independent: start and replace them all at once
                 "podManagementPolicy": "Parallel" if (replicas > 1 if parallel is None else parallel)
                 else "OrderedReady",
                 "selector": {"matchLabels": _selector(domain, component)},
                 "persistentVolumeClaimRetentionPolicy": {"whenDeleted": retention, "whenScaled": "Retain"},
                 "volumeClaimTemplates": [_pvc(volume, storage, component, domain)],
                 "template": _template(domain, component, _pod_spec(domain, component, container), config_hash)},
    }


_RESOURCES = {
    "relay": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "512Mi"}},
    "queue": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
    "mailstore": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
    "autoconfig": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "192Mi"}},
    "proxy": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "512Mi"}},
}
PROXY_REPLICAS = 2


def parse_issuer(text: str) -> IssuerRef:
    """``NAME`` (a ClusterIssuer), ``ClusterIssuer/NAME`` or ``Issuer/NAME``: how the
    operator's ``--ingress-issuer`` (the chart's ``autoconfigIngress.issuer``) names one."""
    kind, _, name = text.strip().rpartition("/")
    kind = kind or "ClusterIssuer"
    if kind not in ("ClusterIssuer", "Issuer") or not name:
        raise ValueError(f"{text!r}: give NAME, ClusterIssuer/NAME or Issuer/NAME")
    return IssuerRef(name=name, kind=kind)


def ingress_defaults(class_name: str | None, issuer: str | None) -> AutoconfigIngress | None:
    """The operator's ``--ingress-class`` and ``--ingress-issuer`` (``correo render`` takes
    them too) as defaults for :func:`_autoconfig_ingress`; None when neither is given.
    ValueError for an issuer that is not NAME, ClusterIssuer/NAME or Issuer/NAME."""
    if not class_name and not issuer:
        return None
    return AutoconfigIngress(class_name=class_name or None, issuer_ref=parse_issuer(issuer) if issuer else None)


def _autoconfig_ingress(domain: MailDomain, defaults: AutoconfigIngress | None = None) -> dict | None:
    """The Ingress in front of the autoconfig Service (``spec.autoconfig.ingress``), or None.
    ``defaults``: the class and issuer the operator was started with (the chart's
    values), for what the MailDomain leaves unset."""
    ing = domain.spec.autoconfig.ingress
    if ing is None:
        return None
    if defaults is not None:
        ing = dataclasses.replace(ing, class_name=ing.class_name or defaults.class_name,
                                  issuer_ref=ing.issuer_ref or defaults.issuer_ref)
    n = names(domain)
    hosts = autoconfig_hosts(domain)
    meta = child_meta(domain, n["autoconfig"], "autoconfig")
    if ing.issuer_ref is not None:
        key = "cert-manager.io/cluster-issuer" if ing.issuer_ref.kind == "ClusterIssuer" else "cert-manager.io/issuer"
        meta["annotations"] = {key: ing.issuer_ref.name}
    spec: dict[str, Any] = {}
    if ing.class_name:
        spec["ingressClassName"] = ing.class_name
    spec["tls"] = [{"hosts": hosts, "secretName": ing.tls_secret_name or n["autoconfig_tls"]}]
    spec["rules"] = [{"host": h, "http": {"paths": [{
        "path": "/", "pathType": "Prefix",
        "backend": {"service": {"name": n["autoconfig"], "port": {"name": "http"}}}}]}} for h in hosts]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def render(domain: MailDomain, mailboxes: list[Mailbox], secrets: dict[str, dict], *,
           image: str = DEFAULT_IMAGE, previous_scripts: Mapping[str, str] | None = None,
           previous_shards: Mapping[str, int] | None = None,
           ingress_defaults: AutoconfigIngress | None = None,
           rspamd_image: str = managedrspamd.DEFAULT_IMAGE, queue_pods: int | None = None) -> list[dict]:
    """Every object that runs ``domain``; pure and deterministic.  ``previous_scripts``:
    see :func:`directory_entries`; ``ingress_defaults``: see :func:`_autoconfig_ingress`;
    ``queue_pods``: queue pods to keep while replicas past ``spec.queue.replicas``
    drain (the operator shrinks the StatefulSet only once they report empty,
    ``queuedrain``); the configuration lists only the replicas that stay."""
    spec, n = domain.spec, names(domain)
    config_text = cfgmod.dump(server_config(domain, queue_pods))
    directory_text = dirmod.dump(directory_entries(domain, mailboxes, secrets, previous_scripts, previous_shards))
    # The servers read correo.yaml once, so a change rolls the pods.  So does
    # the TLS Secret appearing (cert-manager issues it after the pods start,
    # and a server without a key pair at start offers no TLS); its renewals
    # do not: the servers reload renewed files by themselves.
    tls_name = domain.tls_secret
    tls_state = "" if not tls_name else ("tls:present" if tls_name in secrets else "tls:waiting")
    config_hash = hashlib.sha256((config_text + tls_state).encode()).hexdigest()[:16]
    relay_replicas = spec.relay.replicas

    objects: list[dict] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": child_meta(domain, n["config"], "config"),
         "data": {cfgmod.CONFIG_FILE: config_text}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": child_meta(domain, n["directory"], "directory"),
         "type": "Opaque", "data": {cfgmod.DIRECTORY_FILE: _b64(directory_text)}},
    ]

    # relay
    relay_c = _container(domain, "relay", image, [(name, port) for name, _, port in RELAY_SERVICE_PORTS],
                         PORTS["relay_http"], [], _RESOURCES["relay"])
    objects += [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": child_meta(domain, n["relay"], "relay"),
         "spec": {"replicas": relay_replicas, "revisionHistoryLimit": 3,
                  "selector": {"matchLabels": _selector(domain, "relay")},
                  "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                  "template": _template(domain, "relay", _pod_spec(domain, "relay", relay_c), config_hash)}},
        _service(domain, n["relay"], "relay", RELAY_SERVICE_PORTS, spec.relay.service_type),
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": child_meta(domain, n["relay"], "relay"),
         "spec": ({"minAvailable": 1} if relay_replicas > 1 else {"maxUnavailable": 1})
                 | {"selector": {"matchLabels": _selector(domain, "relay")}}},
    ]

    # queue
    queue_c = _container(domain, "queue", image, [("lmtp", PORTS["queue_lmtp"])], PORTS["queue_http"],
                         [{"name": "spool", "mountPath": "/var/lib/correo/queue"}], _RESOURCES["queue"])
    objects += [
        # OrderedReady whatever the count: the policy cannot change in place,
        # and scaling the queue up or down must not recreate its StatefulSet
        _statefulset(domain, "queue", spec.queue.storage, n["queue"], "spool", queue_c, config_hash,
                     replicas=max(spec.queue.replicas, queue_pods or 0), parallel=False),
        _service(domain, n["queue"], "queue",
                 [("lmtp", PORTS["queue_lmtp"], PORTS["queue_lmtp"]), ("http", PORTS["queue_http"], PORTS["queue_http"])],
                 headless=True),
    ]

    # mailstore
    store_c = _container(domain, "mailstore", image,
                         [(name, port) for name, _, port in MAILSTORE_SERVICE_PORTS] + [("lmtp", PORTS["mailstore_lmtp"])],
                         PORTS["mailstore_http"], [{"name": "mail", "mountPath": "/var/lib/correo/mail"}],
                         _RESOURCES["mailstore"])
    client_ports = [p for p in MAILSTORE_SERVICE_PORTS
                    if (p[0].startswith("imap") and spec.mailstore.imap)
                    or (p[0].startswith("pop3") and spec.mailstore.pop3)
                    or (p[0] == "managesieve" and (spec.mailstore.imap or spec.mailstore.pop3))]
    shards = spec.mailstore.shards
    objects += [
        _statefulset(domain, "mailstore", spec.mailstore.storage, n["mailstore_internal"], "mail", store_c, config_hash,
                     replicas=shards),
        _service(domain, n["mailstore_internal"], "mailstore",
                 [("lmtp", PORTS["mailstore_lmtp"], PORTS["mailstore_lmtp"]),
                  ("http", PORTS["mailstore_http"], PORTS["mailstore_http"])], headless=True),
    ]
    if shards > 1:
        # The proxy is the public face of IMAP, POP3 and ManageSieve: the
        # client Service keeps its name and points at it.
        proxy_c = _container(domain, "proxy", image, [(name, port) for name, _, port in MAILSTORE_SERVICE_PORTS],
                             PORTS["proxy_http"], [], _RESOURCES["proxy"])
        objects += [
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": child_meta(domain, n["proxy"], "proxy"),
             "spec": {"replicas": PROXY_REPLICAS, "revisionHistoryLimit": 3,
                      "selector": {"matchLabels": _selector(domain, "proxy")},
                      "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                      "template": _template(domain, "proxy", _pod_spec(domain, "proxy", proxy_c), config_hash)}},
            {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
             "metadata": child_meta(domain, n["proxy"], "proxy"),
             "spec": {"minAvailable": 1, "selector": {"matchLabels": _selector(domain, "proxy")}}},
        ]
        if client_ports:
            objects.append(_service(domain, n["mailstore"], "proxy", client_ports, spec.mailstore.service_type))
    elif client_ports:
        objects.append(_service(domain, n["mailstore"], "mailstore", client_ports, spec.mailstore.service_type))

    # autoconfig
    auto_c = _container(domain, "autoconfig", image, [("autoconfig", PORTS["autoconfig"])], PORTS["autoconfig_http"],
                        [], _RESOURCES["autoconfig"])
    objects += [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": child_meta(domain, n["autoconfig"], "autoconfig"),
         "spec": {"replicas": spec.autoconfig.replicas, "revisionHistoryLimit": 3,
                  "selector": {"matchLabels": _selector(domain, "autoconfig")},
                  "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                  "template": _template(domain, "autoconfig", _pod_spec(domain, "autoconfig", auto_c),
                                        config_hash)}},
        _service(domain, n["autoconfig"], "autoconfig", AUTOCONFIG_SERVICE_PORTS),
    ]
    ingress = _autoconfig_ingress(domain, ingress_defaults)
    if ingress is not None:
        objects.append(ingress)

    objects += _network_policies(domain)
    if domain.managed_rspamd:
        objects += managedrspamd.objects(
            domain, image=rspamd_image, meta=lambda name, component: child_meta(domain, name, component),
            labels=_labels(domain, managedrspamd.COMPONENT), selector=_selector(domain, managedrspamd.COMPONENT),
            relay_selector=_selector(domain, "relay"))
    return objects
