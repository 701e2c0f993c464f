"""Reconcile one MailDomain: gather its inputs, render, apply what differs, prune.

This is the operator's core, in plain async functions over the
:class:`~correo_operator.kube.Kube` interface (tested against the API double,
no kopf involved).  ``kopfapp`` only decides *when* to call it; ``statuspoll``
turns the outcome and the services' ``/status`` into CR status; ``deletion``
handles the finalizer; ``dkimkeys`` makes the DKIM key render mounts.

One pass (:func:`reconcile_domain`):

1. **gather**: the Mailboxes of the namespace that belong to the domain
   (``model.belongs``; not those being deleted), read into the typed model,
   and the Secrets they and the domain reference (a missing Secret is
   reported, never fatal);
2. **render** (pure, in a worker thread: hashing plaintext passwords is slow),
   given the admin Sieve scripts of the live directory Secret, so that a
   Mailbox whose new script does not compile keeps its previous valid one
   (``mailrules``);
3. **compare** each rendered object with the live one: it is applied (server-side
   apply, field manager ``correo``, forced) only when a field it sets differs
   from the live object, or when the live object still carries a field
   ``correo`` applied before and no longer renders.  Fields the API server
   defaults, and fields other managers own, never cause a write, so a resync
   with nothing new makes **zero** API writes, and drift (a child deleted or
   edited by hand) is repaired by the next pass;
   A lowered ``spec.queue.replicas`` keeps the queue StatefulSet's pods
   until the leaving ones report drained (``queuescale``);
4. **prune**: live objects labelled ``app.kubernetes.io/managed-by=correo`` and
   ``app.kubernetes.io/instance=<domain>``, owned by this MailDomain, that the
   renderer no longer produces are deleted (the DKIM key Secret is kept).

:class:`Reconciler` serialises passes per MailDomain and coalesces bursts of
triggers (1,000 Mailboxes created at once cost a couple of passes, not 1,000).
"""
from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

import structlog

from correo_server import logs

from correo_server import config as cfgmod

from . import dkimkeys, filters, mailrules, placement, proxykeys, queuescale, render as rendering, secretdata, srskeys
from .kube import FIELD_MANAGER, MAILBOX, MAILDOMAIN, ApiError, Kube, b64
from .model import MailDomain, Mailbox, ModelError, belongs, read_each

log = logs.get(__name__)

# Every kind render may produce, so that a kind it stops producing is pruned too.
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"),
    ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"),
    ("policy/v1", "PodDisruptionBudget"), ("networking.k8s.io/v1", "NetworkPolicy"),
    ("networking.k8s.io/v1", "Ingress"),
)
# More referenced Secrets than this are read with one list of the namespace.
SECRET_LIST_THRESHOLD = 8

ObjKey = tuple[str, str, str]  # kind, namespace, name


def obj_key(obj: dict) -> ObjKey:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


# ---------------------------------------------------------------------------
# Pure decisions
# ---------------------------------------------------------------------------

def contains(live: Any, desired: Any) -> bool:
    """True when every field ``desired`` sets has the same value in ``live``.

    Extra fields in ``live`` (server defaults, other managers) do not matter;
    lists must have the same length and match item by item.  A field missing
    from ``live`` matches a desired zero value (false, 0, "", [] or {}): the API
    server stores it but leaves it out of what it returns (Go's ``omitempty``),
    e.g. a Service's ``publishNotReadyAddresses: false`` or a NetworkPolicy's
    ``egress: []``.
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(contains(live[k], v) if k in live else (v is not None and not v) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        return all(contains(lv, dv) for lv, dv in zip(live, desired))
    if isinstance(desired, bool) or isinstance(live, bool):
        return live is desired
    if isinstance(desired, (int, float)) and isinstance(live, (int, float)):
        return live == desired
    return live == desired


def field_paths(obj: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Paths of the leaf fields an object sets (a list counts as one leaf), as SSA tracks them."""
    if isinstance(obj, dict) and obj:
        out: set[tuple[str, ...]] = set()
        for k, v in obj.items():
            out |= field_paths(v, prefix + (k,))
        return out
    return {prefix} if prefix else set()


def _apply_paths(obj: dict) -> set[tuple[str, ...]]:
    paths = set()
    for p in field_paths({k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}):
        if p[0] == "metadata" and len(p) > 1 and p[1] in ("name", "namespace"):
            continue
        paths.add(p)
    return paths


def owned_paths(live: dict, manager: str = FIELD_MANAGER) -> set[tuple[str, ...]] | None:
    """The fields ``manager`` owns by apply, from ``managedFields`` (None when not published).

    FieldsV1 keys ``f:name`` are fields; ``k:``/``v:``/``i:`` keys address list
    items, and the path is cut at the list, which is how :func:`field_paths` sees it.
    """
    entries = [m for m in (live.get("metadata") or {}).get("managedFields") or []
               if m.get("manager") == manager and m.get("operation") == "Apply" and not m.get("subresource")]
    if not entries:
        return None
    out: set[tuple[str, ...]] = set()

    def walk(node: dict, prefix: tuple[str, ...]) -> None:
        fields = {k: v for k, v in node.items() if k.startswith("f:")}
        if len(fields) < len([k for k in node if k != "."]):  # list item keys: the list is the leaf
            out.add(prefix)
            return
        if not fields:
            if prefix:
                out.add(prefix)
            return
        for k, v in fields.items():
            walk(v if isinstance(v, dict) else {}, prefix + (k[2:],))

    for entry in entries:
        walk(entry.get("fieldsV1") or {}, ())
    return out


def needs_apply(desired: dict, live: dict | None, manager: str = FIELD_MANAGER) -> bool:
    """Whether applying ``desired`` would change ``live``."""
    if live is None:
        return True
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "status")}
    if not contains(live, body):
        return True
    owned = owned_paths(live, manager)
    if owned is None:
        return False
    wanted = _apply_paths(desired)
    # Something correo applied earlier and no longer renders must be removed.
    return any(not any(w[:len(p)] == p or p[:len(w)] == w for w in wanted) for p in owned)


@dataclass
class Plan:
    apply: list[dict] = field(default_factory=list)
    delete: list[dict] = field(default_factory=list)
    unchanged: int = 0


def plan_changes(domain: MailDomain, desired: list[dict], live: list[dict], *, keep: set[str] = frozenset()) -> Plan:
    """What to apply and what to prune; ``keep`` names Secrets never pruned."""
    live_by_key = {obj_key(o): o for o in live}
    desired_keys = set()
    plan = Plan()
    for obj in desired:
        key = obj_key(obj)
        desired_keys.add(key)
        current = live_by_key.get(key)
        if current is not None and current["metadata"].get("deletionTimestamp"):
            continue  # being deleted: re-created by a later pass once gone
        if needs_apply(obj, current):
            plan.apply.append(obj)
        else:
            plan.unchanged += 1
    uid = domain.metadata.uid
    for key, obj in sorted(live_by_key.items()):
        if key in desired_keys or obj["metadata"].get("deletionTimestamp"):
            continue
        if obj["kind"] == "Secret" and key[2] in keep:
            continue
        owners = obj["metadata"].get("ownerReferences") or []
        if uid and any(o.get("uid") == uid for o in owners):
            plan.delete.append(obj)
    return plan


def for_apply(obj: dict) -> dict:
    """The object as an apply configuration: Secrets carry ``data`` (what the API stores)."""
    if obj.get("kind") == "Secret" and obj.get("stringData"):
        obj = copy.deepcopy(obj)
        data = obj.setdefault("data", {})
        for k, v in obj.pop("stringData").items():
            data[k] = b64(str(v))
    return obj


# ---------------------------------------------------------------------------
# One pass
# ---------------------------------------------------------------------------

class ApplyFailed(Exception):
    """Some children could not be applied (the others were); the pass is retried."""

    def __init__(self, failures: list[tuple[ObjKey, ApiError]], message: str) -> None:
        super().__init__(message)
        self.failures = failures


def immutable_change(exc: ApiError, obj: dict) -> bool:
    """The API refused a StatefulSet change to a field it never updates in place
    (volumeClaimTemplates, serviceName, selector, podManagementPolicy)."""
    return (obj.get("kind") == "StatefulSet" and exc.status == 422
            and "Forbidden" in exc.message and "statefulset spec" in exc.message.lower())


async def apply_one(kube: Kube, obj: dict, log_: Any) -> dict:
    """Apply; a StatefulSet whose immutable fields changed (e.g. a new volume size in
    the claim template) is deleted with ``propagationPolicy=Orphan`` and applied
    again: its pods and volume claims stay and the new StatefulSet adopts them."""
    try:
        return await kube.apply(obj)
    except ApiError as exc:
        if not immutable_change(exc, obj):
            raise
    meta = obj["metadata"]
    log_.warning("statefulset recreated, pods and volumes kept", object=f"StatefulSet/{meta['name']}")
    await kube.delete(obj["apiVersion"], "StatefulSet", meta["namespace"], meta["name"], propagation="Orphan")
    return await kube.apply(obj)


@dataclass
class Inputs:
    domain: MailDomain
    mailboxes: list[Mailbox]
    secrets: dict[str, dict]
    missing_secrets: set[str]
    dkim_public_key: str | None = None
    # Mailboxes of the namespace that are not the domain's (some may have been before).
    others: list[Mailbox] = field(default_factory=list)


@dataclass
class Outcome:
    inputs: Inputs
    children: list[dict]  # the live children after the pass
    applied: list[ObjKey] = field(default_factory=list)
    deleted: list[ObjKey] = field(default_factory=list)
    seconds: float = 0.0
    # With shards: where this pass placed each Mailbox and why (status shows it).
    placements: dict[str, placement.Placement] = field(default_factory=dict)

    @property
    def writes(self) -> int:
        return len(self.applied) + len(self.deleted)


async def gather(kube: Kube, domain: MailDomain) -> Inputs:
    """The domain's Mailboxes and referenced Secrets, as the API has them now."""
    ns = domain.namespace
    listed = read_each(Mailbox, await kube.list(MAILBOX.api_version, "Mailbox", ns), unreadable)
    mailboxes = sorted((m for m in listed if belongs(m, domain) and not m.deleting), key=lambda m: m.name)
    others = [m for m in listed if not belongs(m, domain)]
    wanted = rendering.referenced_secrets(domain, mailboxes)
    secrets: dict[str, dict] = {}
    if len(wanted) > SECRET_LIST_THRESHOLD:
        for s in await kube.list("v1", "Secret", ns):
            if s["metadata"]["name"] in wanted:
                secrets[s["metadata"]["name"]] = s
    else:
        for name in sorted(wanted):
            s = await kube.get("v1", "Secret", ns, name)
            if s is not None:
                secrets[name] = s
    missing = set(wanted) - set(secrets)
    return Inputs(domain, mailboxes, secrets, missing, others=others)


def previous_scripts(domain: MailDomain, live: list[dict]) -> dict[str, str]:
    """The admin Sieve scripts of the directory Secret in force: render keeps
    them for Mailboxes whose new script does not compile (see ``mailrules``)."""
    name = rendering.names(domain)["directory"]
    for obj in live:
        if obj.get("kind") == "Secret" and obj["metadata"].get("name") == name:
            return mailrules.scripts_in_directory(secretdata.secret_value(obj, cfgmod.DIRECTORY_FILE))
    return {}


def previous_shards(domain: MailDomain, live: list[dict]) -> dict[str, int]:
    """The shards the directory Secret in force records: render keeps them, so
    that adding shards moves no mailbox (see ``placement``)."""
    name = rendering.names(domain)["directory"]
    for obj in live:
        if obj.get("kind") == "Secret" and obj["metadata"].get("name") == name:
            return placement.shards_in_directory(secretdata.secret_value(obj, cfgmod.DIRECTORY_FILE))
    return {}


def placements(domain: MailDomain, mailboxes: list[Mailbox],
               previous: Mapping[str, int]) -> dict[str, placement.Placement]:
    """Where render places each of the domain's Mailboxes against the directory
    in force (``previous``), and why: the same decision, kept for the status
    (a pin that names no shard, a shard that went)."""
    shards = domain.spec.mailstore.shards
    if shards <= 1:
        return {}
    return {mb.spec.address.lower(): placement.place(mb.spec.address, shards, pin=mb.spec.shard,
                                                     recorded=placement.recorded_for(mb.spec.address, previous))
            for mb in mailboxes if belongs(mb, domain)}


def unreadable(obj: dict, exc: ModelError) -> None:
    """Log an object the API returned that does not fit the model (a CRD changed
    under stored objects); it is left out, the rest go on."""
    meta = obj.get("metadata") or {}
    log.warning("object left out: it does not fit the API", kind=obj.get("kind") or "Mailbox",
                namespace=meta.get("namespace"), object=meta.get("name"), field=exc.path, error=exc.message)


async def list_children(kube: Kube, domain: MailDomain,
                        kinds: tuple[tuple[str, str], ...] = CHILD_KINDS) -> list[dict]:
    ns, name = domain.namespace, domain.name
    labels = {rendering.LABEL_INSTANCE: name, rendering.LABEL_MANAGED_BY: rendering.MANAGED_BY}
    out: list[dict] = []
    for api_version, kind in kinds:
        for obj in await kube.list(api_version, kind, ns, labels=labels):
            obj.setdefault("apiVersion", api_version)
            obj.setdefault("kind", kind)
            out.append(obj)
    return out


async def reconcile_domain(kube: Kube, domain: MailDomain, *, image: str = rendering.DEFAULT_IMAGE,
                           render_fn: Callable[..., list[dict]] = rendering.render,
                           status_fetch: queuescale.Fetch | None = None) -> Outcome:
    """One pass for one MailDomain (see the module docstring).  Never raises for a
    missing Secret; API errors propagate (the caller retries)."""
    started = time.monotonic()
    bound = log.bind(namespace=domain.namespace, name=domain.name, kind="MailDomain")
    inputs = await gather(kube, domain)
    dkim_name = rendering.dkim_secret_name(inputs.domain)
    if inputs.domain.spec.dkim.enabled:
        secret = await dkimkeys.ensure(kube, inputs.domain, inputs.secrets.get(dkim_name))
        inputs.secrets[dkim_name] = secret
        inputs.missing_secrets.discard(dkim_name)
        inputs.dkim_public_key = dkimkeys.public_key_b64(secret)
    else:
        inputs.missing_secrets.discard(dkim_name)
    srs_name = filters.srs_secret_name(inputs.domain)
    inputs.secrets[srs_name] = await srskeys.ensure(kube, inputs.domain, inputs.secrets.get(srs_name))
    inputs.missing_secrets.discard(srs_name)
    live = await list_children(kube, inputs.domain)
    recorded = previous_shards(inputs.domain, live)
    # Fewer queue replicas: the leaving pods stay until they drained (queuescale).
    keep_pods = await queuescale.queue_pods(inputs.domain, live, status_fetch)
    desired = await asyncio.to_thread(render_fn, inputs.domain, inputs.mailboxes, inputs.secrets, image=image,
                                      previous_scripts=previous_scripts(inputs.domain, live),
                                      previous_shards=recorded,
                                      **({"queue_pods": keep_pods} if keep_pods is not None else {}))
    desired = [for_apply(o) for o in desired]
    extra = tuple(k for k in dict.fromkeys((o["apiVersion"], o["kind"]) for o in desired) if k not in CHILD_KINDS)
    if extra:
        live += await list_children(kube, inputs.domain, extra)
    keep = {dkim_name, srs_name}
    if inputs.domain.spec.mailstore.shards > 1:  # the proxy's credential, made once, before the pods need it
        keep.add(await proxykeys.ensure(kube, inputs.domain, live))
    plan = plan_changes(inputs.domain, desired, live, keep=keep)
    current = {obj_key(o): o for o in live}
    outcome = Outcome(inputs, [], placements=placements(inputs.domain, inputs.mailboxes, recorded))
    failures: list[tuple[ObjKey, ApiError]] = []
    live_keys = {obj_key(o) for o in live}
    for obj in plan.apply:
        key = obj_key(obj)
        try:
            current[key] = await apply_one(kube, obj, bound)
        except ApiError as exc:  # one bad object does not hold back the others
            failures.append((key, exc))
            bound.error("apply failed", object=f"{key[0]}/{key[2]}", status=exc.status, reason=exc.reason,
                        error=exc.message[:300])
            continue
        outcome.applied.append(key)
        bound.info("applied", object=f"{key[0]}/{key[2]}", created=key not in live_keys)
    for obj in plan.delete:
        key = obj_key(obj)
        await kube.delete(obj["apiVersion"], obj["kind"], key[1], key[2])
        current.pop(key, None)
        outcome.deleted.append(key)
        bound.info("pruned", object=f"{key[0]}/{key[2]}")
    if inputs.missing_secrets:
        bound.warning("secrets missing", secrets=sorted(inputs.missing_secrets))
    outcome.children = list(current.values())
    outcome.seconds = time.monotonic() - started
    if failures:
        (key, exc), *_ = failures
        raise ApplyFailed(failures, f"{len(failures)} object(s) could not be applied; first {key[0]}/{key[2]}: "
                                    f"{exc.status} {exc.reason}: {exc.message[:300]}")
    bound.info("reconciled", mailboxes=len(inputs.mailboxes), applied=len(outcome.applied),
               pruned=len(outcome.deleted), unchanged=plan.unchanged, seconds=round(outcome.seconds, 3))
    return outcome


# ---------------------------------------------------------------------------
# Serialised, coalesced passes
# ---------------------------------------------------------------------------

DomainKey = tuple[str, str]  # namespace, MailDomain name
AfterPass = Callable[[Kube, Outcome], Awaitable[None]]


@dataclass
class _KeyState:
    pending: asyncio.Future | None = None
    worker: asyncio.Task | None = None


class Reconciler:
    """Runs :func:`reconcile_domain` (then ``after``, e.g. the status update) for a
    MailDomain, one pass at a time per MailDomain.

    :meth:`run` returns the outcome of a pass that *started after* the call, so
    a caller always sees its trigger's effect; callers arriving while a pass runs
    share the next one.  It also remembers which Secrets and Mailboxes each
    MailDomain used, so that Secret and Mailbox events find their MailDomains.
    """

    def __init__(self, kube: Kube, *, image: str = rendering.DEFAULT_IMAGE, after: AfterPass | None = None,
                 debounce: float = 0.05, metrics: Any = None,
                 render_fn: Callable[..., list[dict]] = rendering.render,
                 status_fetch: queuescale.Fetch | None = None) -> None:
        self.kube = kube
        # reads a leaving queue replica's /status (queuescale); by default the status writer's reader
        self.status_fetch = status_fetch or getattr(after, "fetch", None)
        self.image = image
        self.after = after
        self.debounce = debounce
        self.metrics = metrics
        self.render_fn = render_fn
        self._state: dict[DomainKey, _KeyState] = {}
        self.secret_refs: dict[tuple[str, str], set[str]] = {}  # (ns, secret) -> MailDomain names
        self.mailbox_domain: dict[str, DomainKey] = {}  # Mailbox uid -> its MailDomain at the last pass
        self.passes = 0

    # -- lookups for the event handlers -------------------------------------
    def domains_using_secret(self, namespace: str, name: str) -> set[DomainKey]:
        return {(namespace, d) for d in self.secret_refs.get((namespace, name), ())}

    def busy_in(self, namespace: str) -> set[DomainKey]:
        """MailDomains of ``namespace`` with a pass running or waiting."""
        return {k for k, s in self._state.items() if k[0] == namespace
                and (s.pending is not None or (s.worker is not None and not s.worker.done()))}

    def _remember(self, outcome: Outcome) -> None:
        ns, name = outcome.inputs.domain.namespace, outcome.inputs.domain.name
        self.forget(ns, name)
        for secret in rendering.referenced_secrets(outcome.inputs.domain, outcome.inputs.mailboxes):
            self.secret_refs.setdefault((ns, secret), set()).add(name)
        for mb in outcome.inputs.mailboxes:
            if mb.metadata.uid:
                self.mailbox_domain[mb.metadata.uid] = (ns, name)

    def forget(self, namespace: str, name: str) -> None:
        for key in [k for k, v in self.secret_refs.items() if k[0] == namespace and name in v]:
            self.secret_refs[key].discard(name)
            if not self.secret_refs[key]:
                del self.secret_refs[key]
        for uid in [u for u, k in self.mailbox_domain.items() if k == (namespace, name)]:
            del self.mailbox_domain[uid]

    # -- passes ------------------------------------------------------------------
    async def run(self, namespace: str, name: str, *, trigger: str = "manual") -> Outcome | None:
        """Reconcile now (or right after the pass in progress); None when the
        MailDomain is gone or being deleted."""
        key = (namespace, name)
        state = self._state.setdefault(key, _KeyState())
        if state.pending is None:
            state.pending = asyncio.get_running_loop().create_future()
        fut = state.pending
        if state.worker is None or state.worker.done():
            state.worker = asyncio.create_task(self._work(key, state, trigger), name=f"reconcile {namespace}/{name}")
        return await asyncio.shield(fut)

    async def _work(self, key: DomainKey, state: _KeyState, trigger: str) -> None:
        with structlog.contextvars.bound_contextvars(namespace=key[0], name=key[1], kind="MailDomain"):
            if self.debounce:
                await asyncio.sleep(self.debounce)
            while state.pending is not None:
                fut, state.pending = state.pending, None
                try:
                    result = await self._once(key, trigger)
                except asyncio.CancelledError:
                    if not fut.done():
                        fut.cancel()
                    raise
                except Exception as exc:  # noqa: BLE001 - handed to every waiter
                    if not fut.done():
                        fut.set_exception(exc)
                        fut.exception()  # mark retrieved: waiters may have gone
                else:
                    if not fut.done():
                        fut.set_result(result)
        if self._state.get(key) is state and state.pending is None:
            del self._state[key]

    async def _once(self, key: DomainKey, trigger: str) -> Outcome | None:
        ns, name = key
        started = time.monotonic()
        obj = await self.kube.get(MAILDOMAIN.api_version, "MailDomain", ns, name)
        domain = MailDomain.from_object(obj) if obj is not None else None
        if domain is None or domain.deleting:
            self.forget(ns, name)
            return None
        self.passes += 1
        try:
            outcome = await reconcile_domain(self.kube, domain, image=self.image, render_fn=self.render_fn,
                                             status_fetch=self.status_fetch)
            self._remember(outcome)
            if self.after is not None:
                await self.after(self.kube, outcome)
        except Exception as exc:
            if self.metrics:
                self.metrics.reconciled(trigger, ok=False, seconds=time.monotonic() - started)
            log.error("reconcile failed", namespace=ns, name=name, trigger=trigger,
                      error=f"{type(exc).__name__}: {exc}")
            raise
        if self.metrics:
            self.metrics.reconciled(trigger, ok=True, seconds=time.monotonic() - started)
        return outcome

    async def close(self) -> None:
        """Cancel passes in progress (at shutdown)."""
        workers = [s.worker for s in self._state.values() if s.worker and not s.worker.done()]
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for state in self._state.values():
            if state.pending is not None and not state.pending.done():
                state.pending.cancel()
        self._state.clear()

    async def idle(self) -> None:
        """Wait until no pass is running or pending (for tests and the benchmark)."""
        while True:
            workers = [s.worker for s in self._state.values() if s.worker and not s.worker.done()]
            if not workers:
                return
            await asyncio.gather(*workers, return_exceptions=True)
