"""The SRS secret of a MailDomain: generated once, kept in a Secret.

Like the DKIM key (``dkimkeys``): ``reconcile`` calls :func:`ensure` before
rendering; when the Secret ``filters.srs_secret_name(domain)`` does not exist
it creates it (owned by the MailDomain) with one random key under
``srs.keys``, which the relay and the queue mount
(``correo_server.srs``: the first line signs, every line verifies).  It is
created, never applied: an existing Secret is never replaced, so that bounce
addresses already out there stay valid.  To rotate, an administrator puts a
new key on the first line and keeps the old one below it for the 21 days
SRS addresses live.
"""
from __future__ import annotations

from correo_server import logs
from correo_server.srs import generate_key

from . import filters, render as rendering
from . import secretdata
from .kube import Kube, b64
from .model import MailDomain

log = logs.get(__name__)


def usable(secret: dict | None) -> bool:
    value = secretdata.secret_value(secret, filters.SRS_KEY_FIELD) if secret else None
    return bool(value and any(line.strip() and not line.strip().startswith("#") for line in value.splitlines()))


def secret_for(domain: MailDomain, key: str) -> dict:
    meta = rendering.child_meta(domain, filters.srs_secret_name(domain), "srs")
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta,
            "data": {filters.SRS_KEY_FIELD: b64(key + "\n")}}


async def ensure(kube: Kube, domain: MailDomain, existing: dict | None) -> dict:
    """The SRS Secret of ``domain``, created with a new key when missing."""
    ns, name = domain.namespace, filters.srs_secret_name(domain)
    if existing is not None:
        if not usable(existing):
            log.warning("srs secret holds no key; forwards keep their sender", namespace=ns, name=domain.name,
                        secret=name, key=filters.SRS_KEY_FIELD)
        return existing
    created = await kube.create(secret_for(domain, generate_key()))
    if created is None:  # created meanwhile by another pass: use that one
        created = await kube.get("v1", "Secret", ns, name)
        if created is None:
            raise RuntimeError(f"Secret {ns}/{name} exists and does not")
    else:
        log.info("srs key generated", namespace=ns, name=domain.name, secret=name)
    return created
