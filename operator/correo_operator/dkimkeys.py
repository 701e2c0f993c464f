"""The DKIM signing key of a MailDomain: generated once, kept in a Secret.

``reconcile`` calls :func:`ensure` before rendering: when the Secret
``render.dkim_secret_name(domain)`` does not exist it generates an RSA key and
creates the Secret (owned by the MailDomain, so it goes with it), with the
PEM private key under ``dkim.key`` (what the relay's projected volume mounts)
and the DNS TXT value under ``dkim.txt``.  It is created, never applied: an
existing key is never replaced, even if two passes race.  The public half goes
into the MailDomain's status as the DKIM record to publish (``status.dns_records``).
"""
from __future__ import annotations

import asyncio
import base64
import functools

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from correo_server import logs

from . import render as rendering
from . import secretdata
from .kube import Kube, b64
from .model import MailDomain

log = logs.get(__name__)

KEY_FIELD = "dkim.key"
TXT_FIELD = "dkim.txt"
KEY_BITS = 2048


def generate_pem(bits: int = KEY_BITS) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode("ascii")


@functools.lru_cache(maxsize=256)
def public_key_from_pem(pem: str) -> str:
    """base64 of the DER SubjectPublicKeyInfo: the ``p=`` of the DKIM record."""
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def txt_record(public_b64: str) -> str:
    return f"v=DKIM1; k=rsa; p={public_b64}"


def public_key_b64(secret: dict | None) -> str | None:
    """The public key of a DKIM Secret, or None when it holds no usable key."""
    if not secret:
        return None
    pem = secretdata.secret_value(secret, KEY_FIELD)
    if not pem:
        return None
    try:
        return public_key_from_pem(pem)
    except (ValueError, TypeError):
        return None


def secret_for(domain: MailDomain, pem: str) -> dict:
    meta = rendering.child_meta(domain, rendering.dkim_secret_name(domain), "dkim")
    meta["annotations"] = {"correo.dev/dkim-selector": domain.spec.dkim.selector}
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta,
        "data": {KEY_FIELD: b64(pem), TXT_FIELD: b64(txt_record(public_key_from_pem(pem)))},
    }


async def ensure(kube: Kube, domain: MailDomain, existing: dict | None) -> dict:
    """The DKIM Secret of ``domain``, created with a new key when missing."""
    if existing is not None and public_key_b64(existing):
        return existing
    ns, name = domain.namespace, rendering.dkim_secret_name(domain)
    if existing is not None:
        # A Secret of that name without a usable key is someone else's: say so, leave it.
        log.warning("dkim secret holds no private key; not replacing it", namespace=ns,
                    name=domain.name, secret=name, key=KEY_FIELD)
        return existing
    pem = await asyncio.to_thread(generate_pem)
    created = await kube.create(secret_for(domain, pem))
    if created is None:  # created meanwhile by another pass: use that one
        created = await kube.get("v1", "Secret", ns, name)
        if created is None:
            raise RuntimeError(f"Secret {ns}/{name} exists and does not")
    else:
        log.info("dkim key generated", namespace=ns, name=domain.name, secret=name, bits=KEY_BITS)
    return created
