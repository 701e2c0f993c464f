"""DKIM verification (RFC 6376) of every signature on a message, with dkimpy.

rsa-sha256 and ed25519-sha256 (RFC 8463, through PyNaCl) are verified;
rsa-sha1 is verified too, as dkimpy does, and reported as it comes out.
Each ``DKIM-Signature:`` field gets one :class:`DkimResult`, in the RFC 8601
vocabulary:

* ``pass``       the signature verifies with the key published for ``s=``/``d=``;
* ``fail``       it does not (body hash or signature mismatch), the key is
                 revoked (empty ``p=``), or the signature has expired (``x=``);
* ``neutral``    the signature cannot be processed (a syntax error, a missing
                 tag, an unknown algorithm);
* ``policy``     it verifies but with a key shorter than 1024 bits;
* ``permerror``  no usable key: none published, or not a key;
* ``temperror``  the key could not be fetched (DNS failure or timeout).

I/O at the edge: :func:`key_names` says which key records a message needs,
:func:`check` fetches them through the connection's
:class:`~.dnsanswers.DnsView` (all at once) and runs :func:`verify`, which is
pure over the answers, in a worker thread (hashing a large body and the RSA
operation would stall the event loop).  A failed signature is the same as no
signature (RFC 6376 section 6.3): nothing here refuses mail; DMARC and the
own-domain rule (:mod:`.dmarc`, :mod:`.owndomain`) decide what a result means.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass

import dkim as dkimpy
from dkim.util import InvalidTagValueList, parse_tag_value

from . import dnsanswers
from . import headers as hdrs
from .dnsanswers import Answers, DnsView

MIN_KEY_BITS = 1024

_quiet = logging.getLogger("correo.dkimpy")  # dkimpy logs every failure at ERROR; it is not ours to shout
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass, fail, neutral, policy, permerror, temperror
    domain: str = ""  # d=, lower-case
    selector: str = ""  # s=
    algorithm: str = ""  # a=
    header_b: str = ""  # the first 8 characters of b= (RFC 6008), to tell signatures apart
    identity: str = ""  # i=
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.result == "pass"


@dataclass(frozen=True)
class _Signature:
    index: int
    tags: dict[bytes, bytes] | None
    problem: str = ""

    def tag(self, name: bytes) -> str:
        if not self.tags:
            return ""
        return self.tags.get(name, b"").decode("ascii", "replace")

    @property
    def key_name(self) -> str | None:
        if not self.tags or b"s" not in self.tags or b"d" not in self.tags:
            return None
        return f"{self.tag(b's')}._domainkey.{self.tag(b'd')}".lower()


def _signatures(message: bytes) -> list[_Signature]:
    out = []
    fields, _ = hdrs.split(message)
    for i, f in enumerate(x for x in fields if x.lname == "dkim-signature"):
        _, _, value = f.raw.partition(b":")
        unfolded = value.replace(b"\r\n", b"").replace(b"\n", b"")
        try:
            out.append(_Signature(i, parse_tag_value(unfolded)))
        except InvalidTagValueList as exc:
            out.append(_Signature(i, None, f"signature syntax error: {exc}"))
    return out


def key_names(message: bytes) -> list[str]:
    """The ``selector._domainkey.domain`` names whose TXT records verify it."""
    names = []
    for sig in _signatures(message):
        name = sig.key_name
        if name and name not in names:
            names.append(name)
    return names


def _compact(value: str) -> str:
    return "".join(value.split())


def _key_problem(name: str, txt: bytes) -> tuple[str, str] | None:
    """(result, reason) when the key record cannot verify anything."""
    try:
        tags = parse_tag_value(txt)
    except InvalidTagValueList as exc:
        return "permerror", f"key record at {name} is not a key: {exc}"
    if b"p" in tags and not tags[b"p"].strip():
        return "fail", f"key at {name} is revoked (empty p=)"
    try:
        dkimpy.evaluate_pk(name, txt)
    except dkimpy.DKIMException as exc:
        return "permerror", f"key at {name} is not usable: {exc}"
    except Exception as exc:  # a malformed key can upset the ASN.1 parser in many ways
        return "permerror", f"key at {name} is not usable: {type(exc).__name__}"
    return None


def _key_text(answer) -> bytes | None:
    """The DKIM key record among the TXT records at a key name: the first
    that looks like one (``v=DKIM1`` or a ``p=`` tag)."""
    texts = answer.texts()
    for text in texts:
        if text.lstrip().startswith(b"v=DKIM1") or b"p=" in text:
            return text
    return texts[0] if texts else None


def verify(message: bytes, answers: Answers, *, now: float | None = None) -> list[DkimResult]:
    """Every signature's result, from the key records in ``answers`` (keyed
    as :func:`~.dnsanswers.key` makes keys).  Pure apart from the clock."""
    sigs = _signatures(message)
    if not sigs:
        return []
    now = time.time() if now is None else now
    checker = dkimpy.DKIM(message, logger=_quiet, minkey=MIN_KEY_BITS)
    results = []
    for sig in sigs:
        base = dict(domain=sig.tag(b"d").lower(), selector=sig.tag(b"s"), algorithm=sig.tag(b"a").lower(),
                    header_b=_compact(sig.tag(b"b"))[:8], identity=sig.tag(b"i"))
        if sig.tags is None:
            results.append(DkimResult("neutral", reason=sig.problem))
            continue
        try:
            dkimpy.validate_signature_fields(sig.tags)
        except dkimpy.ValidationError as exc:
            text = str(exc)
            expired = "x=" in text and "past" in text
            results.append(DkimResult("fail" if expired else "neutral", **base,
                                      reason="signature expired" if expired else f"signature syntax error: {text}"))
            continue
        name = sig.key_name
        assert name is not None
        answer = answers.get(dnsanswers.key(name, "TXT"))
        if answer is None or answer.temporary:
            why = answer.error if answer is not None else "key not fetched"
            results.append(DkimResult("temperror", **base, reason=f"key lookup at {name}: {why}"))
            continue
        txt = _key_text(answer) if answer.ok else None
        if txt is None:
            results.append(DkimResult("permerror", **base, reason=f"no key published at {name}"))
            continue
        problem = _key_problem(name, txt)
        if problem:
            results.append(DkimResult(problem[0], **base, reason=problem[1]))
            continue
        results.append(_verify_one(checker, sig, name, txt, base))
    return results


def _verify_one(checker: dkimpy.DKIM, sig: _Signature, name: str, txt: bytes, base: dict) -> DkimResult:
    def dnsfunc(_name, timeout=5):  # the key already fetched, whatever name dkimpy spells
        return txt

    try:
        ok = checker.verify(idx=sig.index, dnsfunc=dnsfunc)
    except dkimpy.KeyFormatError as exc:
        if "too small" in str(exc):
            return DkimResult("policy", **base, reason=f"key at {name} is shorter than {MIN_KEY_BITS} bits")
        return DkimResult("permerror", **base, reason=f"key at {name}: {exc}")
    except dkimpy.ValidationError as exc:
        if "body hash" in str(exc):
            return DkimResult("fail", **base, reason="body hash did not verify")
        return DkimResult("neutral", **base, reason=f"signature not verifiable: {exc}")
    except dkimpy.DKIMException as exc:
        return DkimResult("neutral", **base, reason=f"signature not verifiable: {exc}")
    except (ValueError, TypeError, IndexError, base64.binascii.Error) as exc:
        return DkimResult("neutral", **base, reason=f"signature not verifiable: {type(exc).__name__}")
    if ok:
        return DkimResult("pass", **base)
    return DkimResult("fail", **base, reason="signature did not verify")


async def check(view: DnsView, message: bytes, *, now: float | None = None) -> list[DkimResult]:
    """:func:`verify`, after fetching the keys it needs through ``view``."""
    if not any(f.lname == "dkim-signature" for f in hdrs.split(message)[0]):
        return []
    names = key_names(message)
    if names:
        await view.lookup_all([(n, "TXT") for n in names])
    return await asyncio.to_thread(verify, message, dict(view.answers), now=now)
