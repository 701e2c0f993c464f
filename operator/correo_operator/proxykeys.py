"""The proxy's credential of a MailDomain with mailstore shards: generated
once, kept in a Secret.

``reconcile`` calls :func:`ensure` before applying when
``spec.mailstore.shards`` > 1.  When the Secret ``render.proxy_secret_name``
does not exist it creates it (owned by the MailDomain) with 32 random bytes,
hex, under ``proxy.secret``; the mailstore shards and the proxy mount it as
``proxy/secret`` (``render``).  The proxy logs in to a shard with SASL PLAIN,
authorization identity the user, authentication identity ``correo-proxy``
and this secret (:mod:`correo_server.proxy`): the user's password is checked
once, by the proxy, and never sent again.  Created, never applied: an
existing secret is never replaced (rotate it by deleting the Secret; the pods
read the new one on their next restart).
"""
from __future__ import annotations

import secrets as pysecrets

from correo_server import logs

from . import render as rendering
from . import secretdata
from .kube import Kube, b64
from .model import MailDomain

log = logs.get(__name__)


def new_secret() -> str:
    return pysecrets.token_hex(32)


def secret_for(domain: MailDomain, value: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": rendering.child_meta(domain, rendering.proxy_secret_name(domain), "proxy"),
        "data": {rendering.PROXY_SECRET_KEY: b64(value)},
    }


async def ensure(kube: Kube, domain: MailDomain, live: list[dict]) -> str:
    """Make the proxy Secret of ``domain`` when it is not among the ``live``
    children; returns its name."""
    ns, name = domain.namespace, rendering.proxy_secret_name(domain)
    existing = next((o for o in live if o.get("kind") == "Secret" and o["metadata"].get("name") == name), None)
    if existing is not None and secretdata.secret_value(existing, rendering.PROXY_SECRET_KEY):
        return name
    if existing is not None:
        log.warning("proxy secret holds no proxy.secret; not replacing it", namespace=ns, secret=name)
        return name
    if await kube.create(secret_for(domain, new_secret())) is not None:
        log.info("proxy credential generated", namespace=ns, name=domain.name, secret=name)
    return name
