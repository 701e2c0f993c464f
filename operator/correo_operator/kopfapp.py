"""The kopf wiring: when to reconcile, nothing more (``correo operator`` runs it).

Handlers are thin: each reads the object kopf hands it into the typed model
(``model``) and calls into ``reconcile.Reconciler`` (render and
apply, then ``statuspoll.StatusWriter`` for status), or ``deletion``.  They
return nothing; status is typed and written by ``statuspoll`` only, so nothing
kopf-internal lands in ``status``.  kopf keeps its own bookkeeping in
annotations under ``correo.dev/`` and uses the finalizer
``correo.dev/finalizer`` on MailDomains.

Triggers:

* MailDomain created, updated or found at startup (resume): reconcile; kopf
  retries on errors.
* every ``--status-interval`` seconds per MailDomain (a timer): reconcile,
  which writes nothing when nothing differs and repairs drift, then status.
* a Mailbox event: reconcile the MailDomain whose domain or alias domains hold
  the address's domain in the same namespace (a kopf index, no API call), and
  the MailDomain it belonged to before if that differs; status-only changes of
  a Mailbox are ignored.  A Mailbox without a MailDomain gets status
  ``DomainNotFound``.  Mailboxes need no finalizer (see ``deletion``).
* a Secret event for a Secret some MailDomain references: reconcile those.
* MailDomain deleted: ``deletion.finalize_domain`` (reclaim policy).

The operator runs as one replica by design (``standalone``: no peering); the
chart's Deployment has ``replicas: 1`` and the ``Recreate`` strategy.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

import kopf
import structlog

from correo_server import logs
from correo_server.config import Listen
from correo_server.sideport import SidePort

from . import deletion, managedrspamd, render as rendering
from .kube import MAILBOX, MAILDOMAIN, Connection, HttpKube, Kube
from .model import AutoconfigIngress, MailDomain, Mailbox, ModelError, read_each
from .opmetrics import OpMetrics
from .reconcile import Reconciler, unreadable
from .opmoves import OperatorMoves
from .statuspoll import HttpStatusReader, StatusWriter

log = logs.get(__name__)

GROUP, VERSION = MAILDOMAIN.group, MAILDOMAIN.version
PREFIX = "correo.dev"

# What kopf itself calls (watching, finalizer and annotation patches); the chart
# grants the union of this and kube.PERMISSIONS, and the tests check that.
KOPF_PERMISSIONS: dict[tuple[str, str], frozenset[str]] = {
    (GROUP, "maildomains"): frozenset({"list", "watch", "patch"}),
    (GROUP, "mailboxes"): frozenset({"list", "watch"}),
    ("", "secrets"): frozenset({"list", "watch"}),
}
# Only when watching all namespaces: kopf follows CRDs to notice new resources.
KOPF_CLUSTER_PERMISSIONS: dict[tuple[str, str], frozenset[str]] = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): frozenset({"list", "watch"}),
}


@dataclass
class OperatorConfig:
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    status_interval: float = 30.0
    metrics_port: int | None = 8080
    metrics_host: str = "0.0.0.0"
    image: str = rendering.DEFAULT_IMAGE
    # The autoconfig Ingress's class and cert-manager issuer where a MailDomain names none.
    ingress_defaults: AutoconfigIngress | None = None
    rspamd_image: str = managedrspamd.DEFAULT_IMAGE  # a managed rspamd's (spec.filter.rspamd.managed)
    connection: Connection | None = None  # None: in-cluster or kubeconfig
    status_fetch: Any = None  # URL -> status document; None: HTTP
    debounce: float = 0.05


@dataclass
class Runtime:
    """What the handlers share; built at startup."""

    config: OperatorConfig
    kube: Kube
    metrics: OpMetrics
    reconciler: Reconciler
    writer: StatusWriter
    sideport: SidePort | None = None
    ready: bool = False
    # fingerprints of what the last pass saw, to ignore our own status writes
    seen_mailboxes: dict[str, tuple] = field(default_factory=dict)
    seen_secrets: dict[tuple[str, str], str] = field(default_factory=dict)


def settings_for(config: OperatorConfig, settings: kopf.OperatorSettings | None = None) -> kopf.OperatorSettings:
    settings = settings or kopf.OperatorSettings()
    settings.persistence.finalizer = deletion.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    settings.posting.enabled = False  # correo posts its own, typed Events
    settings.peering.standalone = True
    settings.peering.mandatory = False
    # Namespaced: no cluster-wide permissions, so no scanning of CRDs and namespaces.
    settings.scanning.disabled = bool(config.namespaces)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 4
    # A MailDomain deleted while its resync timer is mid-pass: kopf keeps the finalizer
    # until the timer has exited, and checks again only every cancellation_polling
    # seconds (60 by default: `kubectl delete` hung a minute).
    settings.background.cancellation_polling = 1.0
    return settings


def _fingerprint(mailbox: Mailbox) -> tuple:
    return mailbox.metadata.generation, mailbox.deleting, mailbox.spec.address


def register(registry: kopf.OperatorRegistry, config: OperatorConfig,
             holder: dict[str, Any] | None = None) -> dict[str, Any]:
    """Register every handler into ``registry``; returns ``holder`` (a new dict by
    default), whose ``runtime`` is filled at startup."""
    holder = holder if holder is not None else {}

    def rt() -> Runtime:
        return holder["runtime"]

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        conn = config.connection or Connection.discover()
        config.connection = conn
        return kopf.ConnectionInfo(
            server=conn.server, ca_path=conn.ca_path, insecure=conn.insecure or None,
            scheme="Bearer" if conn.bearer() else None, token=conn.bearer(),
            certificate_path=conn.cert_path, private_key_path=conn.key_path,
            default_namespace=conn.default_namespace)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings_for(config, settings)
        metrics = OpMetrics()
        conn = config.connection or Connection.discover()
        config.connection = conn
        kube = HttpKube(conn, observer=metrics.api_request)
        writer = StatusWriter(config.status_fetch or HttpStatusReader(), metrics=metrics,
                              # mailbox moves talk to the shards as the status reads do: not when a test fakes those
                              moves=OperatorMoves() if config.status_fetch is None else None)
        reconciler = Reconciler(kube, image=config.image, after=writer, metrics=metrics, debounce=config.debounce,
                                render_fn=functools.partial(rendering.render, ingress_defaults=config.ingress_defaults,
                                                            rspamd_image=config.rspamd_image))
        runtime = holder["runtime"] = Runtime(config, kube, metrics, reconciler, writer)
        _remember_fingerprints(runtime)
        if config.metrics_port is not None:
            runtime.sideport = SidePort(Listen(config.metrics_host, config.metrics_port), "operator",
                                        metrics=metrics.registry, status=lambda: _status_doc(runtime),
                                        ready=lambda: runtime.ready)
            await runtime.sideport.start()
        runtime.ready = True
        log.info("operator started", namespaces=config.namespaces or "all", status_interval=config.status_interval,
                 image=config.image, metrics_port=runtime.sideport.port if runtime.sideport else None)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        runtime = holder.get("runtime")
        if runtime is None:
            return
        runtime.ready = False
        await runtime.reconciler.close()
        if runtime.sideport:
            await runtime.sideport.stop()
        if isinstance(runtime.writer.fetch, HttpStatusReader):
            await runtime.writer.fetch.close()
        if runtime.writer.moves is not None:
            await runtime.writer.moves.close()
        if isinstance(runtime.kube, HttpKube):
            await runtime.kube.close()

    @kopf.index(GROUP, VERSION, "maildomains", id="maildomain_names", registry=registry)
    def maildomain_names(body: kopf.Body, name: str, **_: Any) -> dict:
        """MailDomain names by the keys a Mailbox looks them up with (``Mailbox.domain_key``)."""
        return {key: name for domain in read_each(MailDomain, [body], unreadable) for key in domain.domain_keys}

    async def reconcile_now(namespace: str, name: str, trigger: str) -> None:
        with structlog.contextvars.bound_contextvars(namespace=namespace, name=name, kind="MailDomain"):
            await rt().reconciler.run(namespace, name, trigger=trigger)

    @kopf.on.resume(GROUP, VERSION, "maildomains", id="reconcile-on-resume", registry=registry)
    async def domain_resumed(namespace: str, name: str, **_: Any) -> None:
        await reconcile_now(namespace, name, "resume")

    @kopf.on.create(GROUP, VERSION, "maildomains", id="reconcile-on-create", registry=registry)
    async def domain_created(namespace: str, name: str, **_: Any) -> None:
        await reconcile_now(namespace, name, "create")

    @kopf.on.update(GROUP, VERSION, "maildomains", id="reconcile-on-update", registry=registry)
    async def domain_updated(namespace: str, name: str, **_: Any) -> None:
        await reconcile_now(namespace, name, "update")

    @kopf.on.delete(GROUP, VERSION, "maildomains", id="reclaim", registry=registry)
    async def domain_deleted(body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
        with structlog.contextvars.bound_contextvars(namespace=namespace, name=name, kind="MailDomain"):
            runtime = rt()
            await deletion.finalize_domain(runtime.kube, MailDomain.from_object(body))
            runtime.reconciler.forget(namespace, name)
            listed = await runtime.kube.list(MAILBOX.api_version, "Mailbox", namespace)
            mailboxes = [mb for mb in read_each(Mailbox, listed, unreadable) if mb.status.get("domain") == name]
            await runtime.writer.release(runtime.kube, namespace, mailboxes)

    @kopf.timer(GROUP, VERSION, "maildomains", id="resync", interval=config.status_interval,
                initial_delay=config.status_interval, registry=registry)
    async def domain_resync(namespace: str, name: str, **_: Any) -> None:
        await reconcile_now(namespace, name, "resync")

    @kopf.on.event(GROUP, VERSION, "mailboxes", id="mailbox-changed", registry=registry)
    async def mailbox_event(event: dict, body: kopf.Body, namespace: str, name: str, uid: str,
                            maildomain_names: kopf.Index, **_: Any) -> None:
        runtime = rt()
        kind = event.get("type")
        with structlog.contextvars.bound_contextvars(namespace=namespace, name=name, kind="Mailbox"):
            try:
                mailbox = Mailbox.from_object(body)
            except ModelError as exc:  # retrying would not make it fit
                unreadable(dict(body), exc)
                return
            before = runtime.reconciler.mailbox_domain.get(uid)
            if kind == "DELETED":
                runtime.seen_mailboxes.pop(uid, None)
                await deletion.mailbox_removed(runtime.reconciler, mailbox, before)
                return
            if kind != "ADDED" and runtime.seen_mailboxes.get(uid) == _fingerprint(mailbox):
                return  # only its status (ours) or metadata changed
            candidates = sorted(set(maildomain_names.get(mailbox.domain_key, [])))
            targets = {(namespace, candidates[0])} if candidates else set()
            if before and before not in targets:
                targets.add(before)
            for target in sorted(targets):
                await reconcile_now(*target, "mailbox")
            if not candidates:
                runtime.seen_mailboxes[uid] = _fingerprint(mailbox)
                await runtime.writer.orphan(runtime.kube, mailbox, await _password_secret(runtime.kube, mailbox))

    def secret_matters(namespace: str, name: str, body: kopf.Body, **_: Any) -> bool:
        """A Secret some MailDomain uses, in a version no pass has read yet; or any
        Secret of a namespace where a pass is running (it may have read the old one)."""
        runtime = holder.get("runtime")
        if runtime is None:
            return False
        if runtime.reconciler.domains_using_secret(namespace, name):
            rv = body.get("metadata", {}).get("resourceVersion")
            return runtime.seen_secrets.get((namespace, name)) != rv
        return bool(runtime.reconciler.busy_in(namespace))

    @kopf.on.event("v1", "secrets", id="secret-changed", when=secret_matters, registry=registry)
    async def secret_event(namespace: str, name: str, **_: Any) -> None:
        reconciler = rt().reconciler
        targets = reconciler.domains_using_secret(namespace, name) or reconciler.busy_in(namespace)
        for target in sorted(targets):
            await reconcile_now(*target, "secret")

    return holder


def _remember_fingerprints(runtime: Runtime) -> None:
    """Wrap the status hook so that each pass records what it saw (for event filtering)."""
    writer = runtime.writer

    async def after(kube: Kube, outcome) -> int:
        ns = outcome.inputs.domain.namespace
        for mb in outcome.inputs.mailboxes:
            runtime.seen_mailboxes[mb.metadata.uid] = _fingerprint(mb)
        for name, secret in outcome.inputs.secrets.items():
            runtime.seen_secrets[(ns, name)] = secret["metadata"].get("resourceVersion", "")
        return await writer(kube, outcome)

    runtime.reconciler.after = after


async def _password_secret(kube: Kube, mailbox: Mailbox) -> dict[str, dict]:
    name = mailbox.spec.password_secret_ref.name
    secret = await kube.get("v1", "Secret", mailbox.namespace, name)
    return {name: secret} if secret else {}


def _status_doc(runtime: Runtime) -> dict:
    return {"service": "operator", "ready": runtime.ready, "passes": runtime.reconciler.passes,
            "apiWrites": int(runtime.metrics.total_writes()),
            "namespaces": runtime.config.namespaces or ["*"]}


async def run(config: OperatorConfig, *, stop_flag: Any = None, ready_flag: Any = None,
              holder: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the operator until ``stop_flag`` is set (or forever).

    ``holder`` (a dict) receives ``runtime`` at startup, for tests that look inside.
    """
    registry = kopf.OperatorRegistry()
    holder = register(registry, config, holder)
    await kopf.operator(
        registry=registry, settings=settings_for(config), standalone=True,
        clusterwide=not config.namespaces, namespaces=config.namespaces,
        stop_flag=stop_flag, ready_flag=ready_flag, memo=kopf.Memo(), identity=_identity(),
    )
    return holder


def _identity() -> str:
    """kopf's name for this process.  kopf's own default asks the password database
    for the user name, which fails when the pod runs as a uid without an entry there
    (any ``runAsUser`` the image does not know, e.g. OpenShift's random uids)."""
    return os.environ.get("POD_ID") or f"correo@{socket.gethostname()}/{os.getpid()}"


def setup_logging(level: str = "info", stream: Any = None) -> None:
    """structlog JSON, with the object's namespace and name in kopf's own lines too."""
    logs.setup("json", level=level, service="operator", stream=stream)
    renderer = structlog.processors.JSONRenderer(sort_keys=False)
    pre_chain = [
        structlog.contextvars.merge_contextvars,
        _kopf_object_ref,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _service("operator"),
    ]
    for handler in logging.getLogger().handlers:
        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=pre_chain,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    logging.getLogger("kopf").setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _kopf_object_ref(_logger, _name, event_dict):
    record = event_dict.get("_record")
    ref = getattr(record, "k8s_ref", None) if record is not None else None
    if isinstance(ref, dict):
        event_dict.setdefault("namespace", ref.get("namespace"))
        event_dict.setdefault("name", ref.get("name"))
        event_dict.setdefault("kind", ref.get("kind"))
    return event_dict


def _service(name: str):
    def processor(_logger, _method, event_dict):
        event_dict.setdefault("service", name)
        return event_dict
    return processor


def main(args) -> int:
    """``correo operator``: args has ``namespace`` (list), ``status_interval``,
    ``metrics_port`` and ``image``."""
    setup_logging(os.environ.get("CORREO_LOG_LEVEL", "info"))
    try:
        defaults = rendering.ingress_defaults(args.ingress_class, args.ingress_issuer)
    except ValueError as exc:
        print(f"correo operator: --ingress-issuer {exc}", file=sys.stderr)
        return 2
    config = OperatorConfig(
        namespaces=list(args.namespace or []),
        status_interval=float(args.status_interval),
        metrics_port=args.metrics_port,
        image=args.image or os.environ.get("CORREO_IMAGE") or rendering.DEFAULT_IMAGE,
        ingress_defaults=defaults,
        rspamd_image=getattr(args, "rspamd_image", None) or os.environ.get("CORREO_RSPAMD_IMAGE")
        or managedrspamd.DEFAULT_IMAGE,
    )
    # kopf stops on SIGTERM/SIGINT by itself.  (No threading.Event stop flag here:
    # kopf would wait on it in an executor thread that asyncio.run then joins forever.)
    try:
        asyncio.run(run(config))
    except KeyboardInterrupt:
        return 130
    return 0
