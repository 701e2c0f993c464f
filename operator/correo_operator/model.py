"""The API as typed, frozen objects: MailDomain and Mailbox, read once at the boundary.

Everything in the operator reads these, never the raw dicts of the API or the
YAML files: ``render``, ``status``, ``reconcile``, ``statuspoll``, ``deletion``,
``dkimkeys``, ``kopfapp``, the local runtime and the commands.  They are made in
two places only:

* ``loading``, from files, after the CRD schema and CEL rules were checked;
* the operator's reads from the API (:meth:`MailDomain.from_object` on what
  kopf or ``kube`` return), which the API server has validated and defaulted.

**Defaults.**  A field with a CRD ``default`` has the same default here, so an
object converted from a dict that lacks the field, or built in code, holds what
the API server would have filled in; nobody applies defaults again.  A field
the CRD does not default is ``None`` (``()`` for a list) when absent.
``tests/foundation/test_model.py`` holds these classes against the CRD
schemas: every spec property has a field and every field a property, of the
matching type, with the same default.

**Adding a field** is one line here, plus the CRD:

1. add the property to ``crds/*.yaml`` (with its ``default``, if any);
2. add a field to the dataclass of its parent object below, named as the
   property in snake_case (``maxMessageSize`` → ``max_message_size``), with
   the same default.  A new object is a new frozen dataclass; its field in the
   parent takes ``default_factory=ThatClass`` when the CRD defaults it to
   ``{}``, ``ThatClass | None = None`` when it is optional; a list is
   ``tuple[str, ...] = ()``;
3. read it where it is used (``test_model`` fails until 1 and 2 agree).

A value derived from several fields and read in several places (the
hostname, the TLS Secret's name, the domain names) is a property here, so it
too is written once.

Conversion from the API's camelCase dicts (:func:`from_object`) and back
(:func:`to_dict`) is mechanical and derived from the dataclasses; nothing else
lists fields.  Unknown keys are ignored (the API server prunes them, and the
loader reports them as errors before converting); a missing required field or
a value of the wrong type raises :class:`ModelError` with its field path.

**Which MailDomain a Mailbox belongs to** is defined here once: the MailDomain
of its namespace whose domain or alias domains hold its address's domain
(:func:`belongs`, :func:`domain_of`; for an index, :attr:`Mailbox.domain_key`
is found among :attr:`MailDomain.domain_keys`).

**Why dataclasses, not msgspec.**  The servers' configuration below
(``correo_server.config``) is frozen dataclasses with the same camelCase
mapping, so both layers read alike; validation already happens against the
CRD schema (jsonschema and CEL in ``loading``, the API server in a cluster),
so a validating decoder would check everything twice; reading a Mailbox costs
about as much as one of the deep copies it replaced (a no-op resync of 1,000
Mailboxes runs 27% fewer instructions than with defaults re-applied on dicts);
and the image needs no new compiled dependency.

``status`` is kept as the API client returned it, a plain dict (not copied;
nobody changes it): it is the operator's own output, read back only to carry
condition transition times over and to compare before writing, so it is not
typed here and not part of equality.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable

GROUP = "correo.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
DEFAULT_NAMESPACE = "default"


class ModelError(ValueError):
    """An object that does not fit the model; ``path`` names the field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


# ---------------------------------------------------------------------------
# Metadata: the part of ObjectMeta the operator reads.
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Metadata:
    name: str
    namespace: str = DEFAULT_NAMESPACE
    uid: str = ""
    generation: int = 1
    resource_version: str = ""
    deletion_timestamp: str | None = None

    def __post_init__(self) -> None:
        # An empty namespace is the default one; generation starts at 1.
        if not self.namespace:
            object.__setattr__(self, "namespace", DEFAULT_NAMESPACE)
        if not self.generation:
            object.__setattr__(self, "generation", 1)


# ---------------------------------------------------------------------------
# MailDomain spec (crds/maildomains.yaml)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TLS:
    secret_name: str | None = None


@dataclass(frozen=True)
class RateLimit:
    messages: int = 60
    period_seconds: int = 60


@dataclass(frozen=True)
class CredentialsSecretRef:
    name: str
    username_key: str = "username"
    password_key: str = "password"


@dataclass(frozen=True)
class Smarthost:
    host: str
    port: int = 587
    tls: str = "StartTLS"  # StartTLS, Implicit or None
    credentials_secret_ref: CredentialsSecretRef | None = None


@dataclass(frozen=True)
class Relay:
    replicas: int = 2
    service_type: str = "ClusterIP"
    max_message_size: str = "25Mi"
    max_recipients: int = 100
    rate_limit: RateLimit = field(default_factory=RateLimit)
    smarthost: Smarthost | None = None


@dataclass(frozen=True)
class QueueStorage:
    size: str = "5Gi"
    storage_class_name: str | None = None


@dataclass(frozen=True)
class Retry:
    initial_delay_seconds: int = 300
    max_delay_seconds: int = 3600
    backoff_factor: float = 2.0
    warn_after_seconds: int = 14400
    give_up_after_seconds: int = 432000


@dataclass(frozen=True)
class Queue:
    replicas: int = 1
    storage: QueueStorage = field(default_factory=QueueStorage)
    retry: Retry = field(default_factory=Retry)


@dataclass(frozen=True)
class MailstoreStorage:
    size: str = "10Gi"
    storage_class_name: str | None = None


@dataclass(frozen=True)
class Mailstore:
    storage: MailstoreStorage = field(default_factory=MailstoreStorage)
    imap: bool = True
    pop3: bool = True
    over_quota: str = "Reject"  # Reject or Defer
    service_type: str = "ClusterIP"
    shards: int = 1


@dataclass(frozen=True)
class DKIM:
    enabled: bool = True
    selector: str = "correo"


@dataclass(frozen=True)
class IssuerRef:
    name: str
    kind: str = "ClusterIssuer"  # ClusterIssuer or Issuer


@dataclass(frozen=True)
class AutoconfigIngress:
    class_name: str | None = None
    issuer_ref: IssuerRef | None = None
    tls_secret_name: str | None = None


@dataclass(frozen=True)
class Autoconfig:
    enabled: bool = True
    display_name: str | None = None
    replicas: int = 1
    ingress: AutoconfigIngress | None = None


@dataclass(frozen=True)
class MtaSts:
    mode: str = "testing"  # none, testing or enforce
    max_age_seconds: int = 604800
    mx: tuple[str, ...] = ()


@dataclass(frozen=True)
class TLSReporting:
    rua: tuple[str, ...] = ()


@dataclass(frozen=True)
class SenderAuth:
    enabled: bool = True
    reject_spf_fail: bool = True
    protect_own_domains: bool = True
    enforce_dmarc: bool = True


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str = "password"


@dataclass(frozen=True)
class Rspamd:
    managed: bool = False
    url: str | None = None
    password_secret_ref: SecretKeyRef | None = None
    timeout_seconds: int = 20
    on_failure: str = "Tempfail"  # Tempfail or Accept
    virus_symbols: tuple[str, ...] = ()


@dataclass(frozen=True)
class DnsblZone:
    zone: str
    action: str = "Reject"  # Reject, Score or Allow
    weight: int = 1
    return_codes: tuple[str, ...] = ()
    message: str | None = None


@dataclass(frozen=True)
class Dnsbl:
    zones: tuple[DnsblZone, ...] = ()
    threshold: int = 0
    cache_seconds: int = 300


@dataclass(frozen=True)
class Filter:
    sender_auth: SenderAuth = field(default_factory=SenderAuth)
    rspamd: Rspamd | None = None
    dnsbl: Dnsbl = field(default_factory=Dnsbl)


@dataclass(frozen=True)
class MailDomainSpec:
    domain: str
    alias_domains: tuple[str, ...] = ()
    hostname: str | None = None
    tls: TLS | None = None
    relay: Relay = field(default_factory=Relay)
    queue: Queue = field(default_factory=Queue)
    mailstore: Mailstore = field(default_factory=Mailstore)
    dkim: DKIM = field(default_factory=DKIM)
    autoconfig: Autoconfig = field(default_factory=Autoconfig)
    mta_sts: MtaSts = field(default_factory=MtaSts)
    tls_reporting: TLSReporting = field(default_factory=TLSReporting)
    filter: Filter = field(default_factory=Filter)
    default_quota: str = "1Gi"
    reclaim_policy: str = "Retain"  # Retain or Delete
    catch_all: str | None = None
    recipient_delimiter: str = "+"


# ---------------------------------------------------------------------------
# Mailbox spec (crds/mailboxes.yaml)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PasswordSecretRef:
    name: str
    key: str = "password"


@dataclass(frozen=True)
class AutoReply:
    body: str
    enabled: bool = True
    subject: str | None = None
    html_body: str | None = None
    start: str | None = None  # RFC 3339
    end: str | None = None
    interval_days: int = 7
    extra_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class MailboxSpec:
    address: str
    password_secret_ref: PasswordSecretRef
    display_name: str | None = None
    quota: str | None = None
    aliases: tuple[str, ...] = ()
    forward_to: tuple[str, ...] = ()
    keep_copy: bool = True
    suspended: bool = False
    sieve: str | None = None
    auto_reply: AutoReply | None = None
    shard: int | None = None


# ---------------------------------------------------------------------------
# The two kinds
# ---------------------------------------------------------------------------

class _Resource:
    """What MailDomain and Mailbox share: metadata, status, conversion."""

    KIND: ClassVar[str]
    metadata: Metadata
    status: dict

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def deleting(self) -> bool:
        return bool(self.metadata.deletion_timestamp)

    def reference(self) -> dict:
        """The object as an Event's ``involvedObject`` needs it."""
        meta = self.metadata
        return {"apiVersion": API_VERSION, "kind": self.KIND,
                "metadata": {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid,
                             "resourceVersion": meta.resource_version}}

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]):
        """The typed object of an API dict (or a kopf Body); see :func:`from_object`."""
        return _reader(cls)(obj, "")


@dataclass(frozen=True)
class MailDomain(_Resource):
    KIND: ClassVar[str] = "MailDomain"
    metadata: Metadata
    spec: MailDomainSpec
    status: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def domain(self) -> str:
        """The domain, lower case."""
        return self.spec.domain.lower()

    @functools.cached_property
    def domain_names(self) -> tuple[str, ...]:
        """The domain and its alias domains, lower case, in that order."""
        return (self.domain, *(a.lower() for a in self.spec.alias_domains))

    @functools.cached_property
    def domain_keys(self) -> frozenset[tuple[str, str]]:
        """(namespace, domain name) for every name this MailDomain serves."""
        return frozenset((self.namespace, n) for n in self.domain_names if n)

    @property
    def hostname(self) -> str:
        """The mail server's own name: ``spec.hostname``, else ``mail.<domain>``."""
        return self.spec.hostname or f"mail.{self.spec.domain}"

    @property
    def tls_secret(self) -> str | None:
        return self.spec.tls.secret_name if self.spec.tls else None

    @property
    def mta_sts_mx(self) -> tuple[str, ...]:
        """The MX patterns of the MTA-STS policy: the hostname, then ``spec.mtaSts.mx``."""
        return tuple(dict.fromkeys((self.hostname.lower(), *(m.lower() for m in self.spec.mta_sts.mx))))

    @property
    def tls_report_uris(self) -> tuple[str, ...]:
        """Where TLS reports go: ``spec.tlsReporting.rua``, else ``mailto:postmaster@<domain>``."""
        return self.spec.tls_reporting.rua or (f"mailto:postmaster@{self.domain}",)

    @property
    def smarthost_credentials(self) -> CredentialsSecretRef | None:
        smart = self.spec.relay.smarthost
        return smart.credentials_secret_ref if smart else None

    @property
    def rspamd_password(self) -> SecretKeyRef | None:
        rspamd = self.spec.filter.rspamd
        return rspamd.password_secret_ref if rspamd else None

    @property
    def managed_rspamd(self) -> bool:
        """The operator (or ``correo up``) runs rspamd for this domain."""
        rspamd = self.spec.filter.rspamd
        return rspamd is not None and rspamd.managed


@dataclass(frozen=True)
class Mailbox(_Resource):
    KIND: ClassVar[str] = "Mailbox"
    metadata: Metadata
    spec: MailboxSpec
    status: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def address_domain(self) -> str:
        """The domain part of the address, lower case."""
        return domain_part(self.spec.address)

    @property
    def domain_key(self) -> tuple[str, str]:
        """(namespace, domain of the address): found among its MailDomain's :attr:`~MailDomain.domain_keys`."""
        return self.namespace, self.address_domain


Resource = MailDomain | Mailbox


def domain_part(address: str) -> str:
    """The domain of a mail address, lower case."""
    return address.rpartition("@")[2].lower()
KINDS: dict[str, type] = {"MailDomain": MailDomain, "Mailbox": Mailbox}


def belongs(mailbox: Mailbox, domain: MailDomain) -> bool:
    """A Mailbox belongs to the MailDomain of its namespace that serves its address's domain."""
    return mailbox.domain_key in domain.domain_keys


def domain_of(mailbox: Mailbox, domains: Iterable[MailDomain]) -> MailDomain | None:
    """The MailDomain a Mailbox belongs to among ``domains`` (not one being
    deleted; the first by name if several claim it)."""
    for domain in sorted(domains, key=lambda d: d.name):
        if belongs(mailbox, domain) and not domain.deleting:
            return domain
    return None


def read_each(cls: type, objects: Iterable[Mapping[str, Any]],
              skipped: Callable[[Mapping[str, Any], ModelError], None] | None = None) -> list:
    """The objects of a list from the API that fit ``cls``; ``skipped(obj, error)``
    hears of the others, so that one unreadable object holds up no other."""
    out = []
    for obj in objects:
        try:
            out.append(cls.from_object(obj))
        except ModelError as exc:
            if skipped is not None:
                skipped(obj, exc)
    return out


def from_object(obj: Mapping[str, Any]) -> Resource:
    """A MailDomain or Mailbox from its API dict, by ``kind``."""
    cls = KINDS.get(obj.get("kind", "")) if isinstance(obj, Mapping) else None
    if cls is None:
        raise ModelError("kind", f"expected one of {', '.join(KINDS)}, got {obj.get('kind')!r}"
                         if isinstance(obj, Mapping) else "expected an object")
    return cls.from_object(obj)


# ---------------------------------------------------------------------------
# Conversion, derived from the dataclasses (camelCase keys ⇄ snake_case fields)
# ---------------------------------------------------------------------------

def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


Reader = Callable[[Any, str], Any]


def _plain(value: Any) -> Any:
    """Plain dicts and lists for any mappings and sequences (a kopf Body's views)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _scalar(tp: type, what: str) -> Reader:
    def read(value: Any, where: str) -> Any:
        if isinstance(value, bool) is not (tp is bool) or not isinstance(value, tp):
            if tp is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            raise ModelError(where, f"expected {what}, got {value!r}")
        return value
    return read


_SCALARS: dict[Any, Reader] = {
    str: _scalar(str, "a string"), int: _scalar(int, "an integer"),
    float: _scalar(float, "a number"), bool: _scalar(bool, "true or false"),
}


@functools.cache
def _reader(tp: Any) -> Reader:
    """A function that reads a value of type ``tp`` from API data."""
    if tp in _SCALARS:
        return _SCALARS[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        (inner,) = [a for a in args if a is not type(None)]
        return _reader(inner)
    if origin is tuple:
        item = _reader(args[0])

        def read_list(value: Any, where: str) -> tuple:
            if not isinstance(value, (list, tuple)):
                raise ModelError(where, f"expected a list, got {value!r}")
            return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(value))
        return read_list
    if tp is dict:
        def read_mapping(value: Any, where: str) -> dict:
            if type(value) is dict:
                return value  # as the API client decoded it: shared, never changed
            if not isinstance(value, Mapping):
                raise ModelError(where, f"expected an object, got {value!r}")
            return _plain(value)
        return read_mapping
    if dataclasses.is_dataclass(tp):
        return _object_reader(tp)
    raise TypeError(f"no reader for {tp!r}")


def _object_reader(cls: type) -> Reader:
    hints = typing.get_type_hints(cls)
    plan = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        plan.append((f.name, camel(f.name), _reader(hints[f.name]), required))

    def read_object(value: Any, where: str) -> Any:
        if type(value) is not dict and not isinstance(value, Mapping):
            raise ModelError(where, f"expected an object, got {value!r}")
        kwargs = {}
        for name, key, read, required in plan:
            item = value.get(key)
            if item is not None:  # JSON null is absent
                kwargs[name] = read(item, f"{where}.{key}" if where else key)
            elif required:
                raise ModelError(f"{where}.{key}" if where else key, "required field is missing")
        return cls(**kwargs)
    return read_object


def to_dict(obj: Any) -> Any:
    """The API's shape of a model object: camelCase keys, lists; fields that
    are None or empty lists are left out (as absent from the API object)."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None or value == ():
                continue
            out[camel(f.name)] = to_dict(value)
        return out
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj
