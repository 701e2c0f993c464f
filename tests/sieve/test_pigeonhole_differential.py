"""correo's Sieve engine and Pigeonhole (Dovecot's) agree on what scripts do.

Every script of ``corpus/scripts`` runs on every message of
``corpus/messages`` through both: Pigeonhole's ``sieve-test`` (Debian's
dovecot-sieve) prints the actions it would take, correo's interpreter returns
them; both are normalised to the same form (folder + flags of each copy
stored, redirect addresses, reject reasons, vacation period/subject/text, a
run-time error with its implicit keep, or a compile error) and must be equal.
The few cases where correo deliberately differs are listed in
``JUSTIFIED`` with the RFC that says why.
"""
from __future__ import annotations

import datetime as dt
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from correo_server.sieve import (Context, Envelope, FileInto, Keep, Redirect, Reject, ScanVerdict, SieveError,
                                 Vacation, compile_script, run)
from correo_server.sieve.tracking import MemoryState

from .pigeonhole import SIEVE_TEST, Pigeonhole, parse_output

CORPUS = Path(__file__).parent / "corpus"
SCRIPTS = sorted((CORPUS / "scripts").glob("*.sieve"))
MESSAGES = sorted((CORPUS / "messages").glob("*.eml"))

ENVELOPES = {  # message → (MAIL FROM, RCPT TO)
    "rfc-a.eml": ("coyote@desert.example.org", "roadrunner@acme.example.com"),
    "rfc-b.eml": ("b1ff@de.res.example.com", "rube@landru.example.com"),
    "list.eml": ("owner-ietf-mta-filters@imc.org", "ana@example.com"),
    "mime.eml": ("whomever@example.org", "ana@example.com"),
    "i18n.eml": ("juergen@example.de", "ana@example.com"),
    "spam.eml": ("winner@bad.example.biz", "ana@example.com"),  # sieve-test cannot pass the null sender
    "plus.eml": ("news@shop.example.net", "ana+news@example.com"),
    "headeronly.eml": ("ana@example.com", "ana@example.com"),
    "html.eml": ("boss@example.com", "ana@example.com"),
    "autoreply.eml": ("robot@example.net", "ana@example.com"),
}

UNSCANNED = ("autoreply.eml", "headeronly.eml", "html.eml", "i18n.eml", "list.eml", "mime.eml", "rfc-a.eml",
             "rfc-b.eml")

# script → (the messages concerned, or "*" for all; why correo differs from Pigeonhole and is right).
JUSTIFIED: dict[str, tuple[tuple[str, ...] | str, str]] = {
    "base-header-tests.sieve": (
        "*", "RFC 5228 2.7.1: '?' matches exactly one character. Pigeonhole 2.3.19 lets a pattern that starts "
             "with '?' match where it cannot ('?I*' matches 'I have a present'), so its 'q-star' rule fires "
             "on every subject; correo's never does."),
    "include-missing.sieve": (
        "*", "RFC 6609 3.1: a missing included script is an error at execution time and MUST NOT be one at "
             "upload. Pigeonhole links includes while compiling and refuses the script; correo compiles it and "
             "fails when it runs. Both end with the implicit keep."),
    "date-received.sieve": (
        ("spam.eml",), "RFC 5260 6: 'date :index 1 :last' reads the last Received field. Pigeonhole 2.3.19 "
                       "ignores :index in the date test and always reads the first one."),
    "matches-edge.sieve": (
        ("rfc-b.eml", "spam.eml"), "RFC 5228 2.7.3: without :comparator the comparator is i;ascii-casemap, "
                                   "and RFC 5229 5 gives the string test no other. Pigeonhole's string test "
                                   "compares with i;octet, so '*a*a*a*' misses 'CAN BE A MILLIONAIRE'."),
    "spamtestplus.sieve": (
        UNSCANNED, "RFC 5235 3.1 and the example of 3.2.2: ':count' is 0 when no spam test ran on the message "
                   "(no X-Spam-Score here). Pigeonhole counts 1 whatever happened."),
}


def justified(script: str, message: str) -> str | None:
    messages, why = JUSTIFIED.get(script, ((), ""))
    return why if messages == "*" or message in messages else None

pytestmark = pytest.mark.skipif(SIEVE_TEST is None, reason="Pigeonhole's sieve-test is missing: install "
                                "dovecot-sieve (scripts/setup-test-env does)")


class CorpusIncludes:
    def __init__(self) -> None:
        self.cache: dict[tuple[str, str], object] = {}

    def resolve(self, name: str, location: str):
        path = CORPUS / "include" / location / f"{name}.sieve"
        if not path.exists():
            return None
        key = (location, name)
        if key not in self.cache:
            self.cache[key] = compile_script(path.read_bytes(), name)
        return self.cache[key]


def _verdict(message: bytes) -> ScanVerdict:
    spam = re.search(rb"^X-Spam-Score: *([0-9.]+)", message, re.M)
    virus = re.search(rb"^X-Virus-Level: *([0-9]+)", message, re.M)
    return ScanVerdict(spam_score=float(spam.group(1)) if spam else None, spam_max=15.0,
                       virus_level=int(virus.group(1)) if virus else None)


def _flags(flags) -> tuple[str, ...]:
    return tuple(sorted(f.lower() for f in (flags or ())))


def _text(s: str) -> str:
    return s.replace("\r\n", "\n").strip()


def correo_outcome(script_path: Path, message: bytes, sender: str, recipient: str) -> tuple:
    try:
        script = compile_script(script_path.read_bytes(), script_path.stem)
    except SieveError:
        return ("compile-error", ())
    ctx = Context(mailbox=recipient, zone=dt.timezone.utc, state=MemoryState(), includes=CorpusIncludes(),
                  folder_exists=lambda name: name in ("INBOX", "Existing"), verdict=_verdict(message))
    result = run(script, message, Envelope(sender, recipient), ctx)
    if result.error is not None:
        return ("error", (("store", "inbox", ()),))
    actions = []
    for a in result.actions:
        if isinstance(a, Keep):
            actions.append(("store", "inbox", _flags(a.flags)))
        elif isinstance(a, FileInto):
            actions.append(("store", "inbox" if a.folder.upper() == "INBOX" else a.folder, _flags(a.flags)))
        elif isinstance(a, Redirect):
            actions.append(("redirect", a.address.lower()))
        elif isinstance(a, Reject):
            # sieve-test shows CR and LF as "?"
            actions.append(("reject", a.reason.replace("\r", "?").replace("\n", "?")))
        elif isinstance(a, Vacation):
            actions.append(("vacation", a.period, a.subject, _text(a.text)))
    return ("ok", tuple(sorted(actions, key=repr)))


def _normalise_pigeonhole(outcome: tuple) -> tuple:
    status, actions = outcome
    fixed = []
    for a in actions:
        if a[0] == "vacation":
            a = ("vacation", a[1], a[2], _text(a[3]))
        fixed.append(a)
    return (status, tuple(sorted(fixed, key=repr)))


@pytest.fixture(scope="module")
def pigeonhole():
    ph = Pigeonhole()
    ph.add_folder("Existing")
    for location in ("personal", "global"):
        for path in (CORPUS / "include" / location).glob("*.sieve"):
            ph.add_script(location, path.stem, path.read_text())
    yield ph
    ph.close()


@pytest.fixture(scope="module")
def pigeonhole_results(pigeonhole) -> dict[tuple[str, str], tuple]:
    """Every (script, message) through sieve-test, two at a time."""
    def one(pair):
        script, message = pair
        sender, recipient = ENVELOPES[message.name]
        out = pigeonhole.run(script.read_text(), message.read_bytes(), sender=sender, recipient=recipient,
                             name=f"{script.stem}-{message.stem}")
        return (script.name, message.name), _normalise_pigeonhole(parse_output(out))

    pairs = [(s, m) for s in SCRIPTS for m in MESSAGES]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, pairs))


def test_the_corpus_covers_every_message_with_an_envelope():
    assert {m.name for m in MESSAGES} == set(ENVELOPES)
    assert len(SCRIPTS) >= 40


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_correo_and_pigeonhole_take_the_same_actions(script, pigeonhole_results):
    mismatches = []
    for message in MESSAGES:
        sender, recipient = ENVELOPES[message.name]
        ours = correo_outcome(script, message.read_bytes(), sender, recipient)
        theirs = pigeonhole_results[(script.name, message.name)]
        why = justified(script.name, message.name)
        if ours != theirs and why is None:
            mismatches.append(f"{message.name}:\n  correo:     {ours}\n  pigeonhole: {theirs}")
        elif ours == theirs and why is not None:
            mismatches.append(f"{message.name}: listed as a justified difference but both agree: {ours}")
    assert not mismatches, "\n".join(mismatches)


def test_pigeonhole_is_actually_consulted(pigeonhole_results):
    """A broken sieve-test setup would make everything fail alike on both sides."""
    statuses = [v[0] for v in pigeonhole_results.values()]
    assert statuses.count("ok") > len(statuses) * 3 // 4
    assert "error" in statuses  # the limit and conflict scripts
    stored = {a[1] for status, actions in pigeonhole_results.values() for a in actions if a[0] == "store"}
    assert {"filter", "spam", "GrandMa", "lists.sieve", "INBOX.spam-trap", "INBOX.unclassified"} <= stored


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_every_corpus_script_compiles_in_correo(script):
    """So that agreement is about what scripts do, not about both refusing them."""
    compile_script(script.read_bytes(), script.stem)
