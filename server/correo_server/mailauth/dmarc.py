"""DMARC (RFC 7489): the policy of the author's domain, applied to the SPF
and DKIM results.

Steps, each a pure function over DNS answers and earlier results:

1. **Policy discovery** (section 6.6.3): the TXT records at
   ``_dmarc.<From domain>``; when there is no DMARC record there, those at
   ``_dmarc.<organizational domain>``.  Exactly one record starting with
   ``v=DMARC1`` counts; none or several means no policy (``dmarc=none``).
   A DNS failure on the way is ``temperror``.
2. **Organizational domain** (section 3.2): from the Public Suffix List that
   the ``publicsuffixlist`` package ships (ICANN and private sections;
   nothing is downloaded at run time).
3. **Alignment** (section 3.1): SPF is aligned when it passed for a MAIL FROM
   domain (the HELO name for the null sender) that matches the From domain;
   DKIM when a passing signature's ``d=`` does.  ``r`` (relaxed, the default)
   compares organizational domains, ``s`` (strict) the names themselves;
   ``aspf`` and ``adkim`` choose per method.
4. **Result**: ``pass`` when either method is aligned; else ``temperror`` if
   an aligned method could not be decided for a DNS failure (its verdict might
   have been a pass); else ``fail``.
5. **Disposition** of a failure: ``p``, or ``sp`` for a subdomain of the
   organizational domain whose record was found there; ``pct`` samples which
   failing messages get it, the others get the next weaker policy
   (reject → quarantine → none; section 6.6.4).  The sample is an injected
   number in [0, 1), so tests choose it.

What a result implies (:func:`reply_for`): ``reject`` → ``550 5.7.1`` at the
end of DATA; ``quarantine`` → accepted into the recipient's Junk folder;
``temperror`` → ``451 4.7.5`` when the policy could refuse or quarantine
(with ``p=none`` nothing depends on it; the header records it).
"""
from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from publicsuffixlist import PublicSuffixList

from ..replytext import printable
from ..wire.replies import Reply
from . import dnsanswers
from .dkimverify import DkimResult
from .dnsanswers import Answer, Answers, DnsView
from .spf import SpfResult

POLICIES = ("none", "quarantine", "reject")
_WEAKER = {"reject": "quarantine", "quarantine": "none", "none": "none"}


@functools.lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def load_suffix_list() -> None:
    """Parse the public suffix list now (~30 ms of CPU) rather than during
    the first message's checks; the relay calls it at start."""
    _psl()


@functools.lru_cache(maxsize=4096)
def organizational_domain(domain: str) -> str:
    """RFC 7489 section 3.2: the public suffix plus one label; the name
    itself when it is a public suffix (or a single label)."""
    domain = domain.rstrip(".").lower()
    if not domain:
        return domain
    try:
        ascii_name = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        ascii_name = domain
    return _psl().privatesuffix(ascii_name) or ascii_name


def aligned(identifier: str, author: str, mode: str = "r") -> bool:
    identifier = identifier.rstrip(".").lower()
    author = author.rstrip(".").lower()
    if not identifier or not author:
        return False
    if mode == "s":
        return identifier == author
    return organizational_domain(identifier) == organizational_domain(author)


@dataclass(frozen=True)
class Record:
    p: str
    sp: str | None = None
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"
    rua: str = ""


def parse_record(text: str) -> Record | str:
    """A DMARC record, or the reason it cannot be used."""
    tags: dict[str, str] = {}
    parts = [p.strip() for p in text.split(";")]
    if not parts or parts[0].replace(" ", "") != "v=DMARC1":
        return "the record does not start with v=DMARC1"
    for part in parts[1:]:
        if not part:
            continue
        name, eq, value = part.partition("=")
        if not eq:
            return f"malformed tag {part!r}"
        name = name.strip().lower()
        if name not in tags:  # the first of a repeated tag counts
            tags[name] = value.strip()
    rua = tags.get("rua", "")
    p = tags.get("p", "").lower()
    if p not in POLICIES:
        # Section 6.6.3: an invalid or missing p= with a valid rua= is p=none.
        if rua and re.match(r"^\s*[a-z][a-z0-9+.-]*:", rua, re.I):
            p = "none"
        else:
            return f"p={tags.get('p', '')!r} is not none, quarantine or reject" if "p" in tags else "no p= tag"
    sp = tags.get("sp")
    if sp is not None:
        sp = sp.lower()
        if sp not in POLICIES:
            return f"sp={sp!r} is not none, quarantine or reject"
    pct_text = tags.get("pct", "100")
    if not pct_text.isdigit() or not 0 <= int(pct_text) <= 100:
        return f"pct={pct_text!r} is not a number from 0 to 100"
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    if adkim not in ("r", "s"):
        return f"adkim={adkim!r} is not r or s"
    if aspf not in ("r", "s"):
        return f"aspf={aspf!r} is not r or s"
    return Record(p=p, sp=sp, pct=int(pct_text), adkim=adkim, aspf=aspf, rua=rua)


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass, fail, none, temperror, permerror
    domain: str  # the From domain (header.from)
    policy: str = "none"  # p (or sp) as published; "none" without a record
    disposition: str = "none"  # what is done: none, quarantine or reject (after pct)
    record_domain: str = ""  # where the record was found
    record: Record | None = None
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.result == "pass"


def record_names(author: str) -> list[str]:
    """The names policy discovery may ask, in order."""
    author = author.rstrip(".").lower()
    org = organizational_domain(author)
    names = [f"_dmarc.{author}"]
    if org != author:
        names.append(f"_dmarc.{org}")
    return names


def _dmarc_records(answer: Answer) -> list[str]:
    out = []
    for text in answer.texts():
        decoded = text.decode("utf-8", "replace")
        if re.match(r"^v\s*=\s*DMARC1\s*(;|$)", decoded):
            out.append(decoded)
    return out


def discover(author: str, answers: Answers) -> tuple[str, str, Record | None, str] | None:
    """(status, record domain, record, reason) from the answers at
    :func:`record_names`; None when an answer is still missing.  Status is
    ``found``, ``none``, ``temperror`` or ``permerror``."""
    names = record_names(author)
    for name in names:
        answer = answers.get(dnsanswers.key(name, "TXT"))
        if answer is None:
            return None
        if answer.temporary:
            return "temperror", name[len("_dmarc."):], None, answer.error or f"DNS failure at {name}"
        records = _dmarc_records(answer) if answer.ok else []
        if len(records) > 1:
            return "none", name[len("_dmarc."):], None, f"{len(records)} DMARC records at {name}"
        if records:
            parsed = parse_record(records[0])
            if isinstance(parsed, str):
                return "permerror", name[len("_dmarc."):], None, f"{name}: {parsed}"
            return "found", name[len("_dmarc."):], parsed, ""
    return "none", "", None, "no DMARC record"


def evaluate(author: str, answers: Answers, spf: SpfResult | None, dkim: Iterable[DkimResult],
             sample: float) -> DmarcResult | None:
    """The DMARC result for a message whose From domain is ``author``; None
    while a policy answer is missing (see :func:`record_names`).  ``sample``
    in [0, 1) decides ``pct``."""
    author = author.rstrip(".").lower()
    found = discover(author, answers)
    if found is None:
        return None
    status, where, record, why = found
    if status == "temperror":
        return DmarcResult("temperror", author, reason=why)
    if status == "permerror":
        return DmarcResult("permerror", author, record_domain=where, reason=why)
    if record is None:
        return DmarcResult("none", author, reason=why)
    dkim = list(dkim)
    subdomain = where != author
    policy = (record.sp or record.p) if subdomain else record.p
    base = DmarcResult("fail", author, policy=policy, record_domain=where, record=record)
    spf_aligned = spf is not None and aligned(spf.domain, author, record.aspf)
    if spf_aligned and spf.passed:
        return replace(base, result="pass", reason=f"SPF aligned ({spf.domain})")
    for r in dkim:
        if r.passed and aligned(r.domain, author, record.adkim):
            return replace(base, result="pass", reason=f"DKIM aligned (d={r.domain})")
    unsure = []
    if spf_aligned and spf.result == "temperror":
        unsure.append(f"SPF of {spf.domain}")
    unsure += [f"DKIM d={r.domain}" for r in dkim if r.result == "temperror" and aligned(r.domain, author, record.adkim)]
    if unsure:
        return replace(base, result="temperror", reason="could not check " + ", ".join(unsure))
    disposition = policy if sample * 100 < record.pct else _WEAKER[policy]
    why = "no aligned SPF or DKIM pass"
    if disposition != policy:
        why += f"; not sampled by pct={record.pct}"
    return replace(base, disposition=disposition, reason=why)


async def check(view: DnsView, author: str, spf: SpfResult | None, dkim: Iterable[DkimResult],
                rng: Callable[[], float] = random.random) -> DmarcResult:
    """:func:`evaluate`, asking DNS through ``view`` for what it needs."""
    dkim = list(dkim)
    sample = rng()
    for name in record_names(author):
        result = evaluate(author, view.answers, spf, dkim, sample)
        if result is not None:
            return result
        await view.lookup(name, "TXT")
    result = evaluate(author, view.answers, spf, dkim, sample)
    assert result is not None
    return result


def worst(results: Iterable[DmarcResult]) -> DmarcResult | None:
    """Of several author domains' results, the one that decides: a refusal
    before a deferral before quarantine before the rest."""
    order = {"reject": 0, "temperror": 1, "quarantine": 2}

    def rank(r: DmarcResult) -> int:
        if r.result == "temperror":
            return order["temperror"] if r.policy != "none" or r.record is None else 5
        if r.result == "fail":
            return order.get(r.disposition, 4)
        return 6 if r.passed else 5
    results = list(results)
    return min(results, key=rank) if results else None


def reply_for(result: DmarcResult) -> Reply | None:
    """What a result implies at the end of DATA; None: deliver (quarantine
    is a delivery, to Junk: see :func:`junk`)."""
    if result.result == "fail" and result.disposition == "reject":
        return Reply(550, "5.7.1", printable(
            f"Message refused: it fails the DMARC policy of {result.domain} (no aligned SPF or DKIM pass)"),
            "dmarc_reject")
    if result.result == "temperror" and (result.record is None or result.policy != "none"):
        return Reply(451, "4.7.5", printable(
            f"DMARC check of {result.domain} could not be completed ({result.reason}); try again later"),
            "dmarc_temperror")
    return None


def junk(result: DmarcResult) -> bool:
    return result.result == "fail" and result.disposition == "quarantine"
