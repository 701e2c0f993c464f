"""A Mailbox's ``autoReply`` as a Sieve script, and whether it is on now: pure.

The API offers an out-of-office reply without any Sieve knowledge
(``spec.autoReply``: subject, text, optional HTML, a start/end window, the
interval, the person's other addresses).  The renderer copies it into the
directory (:class:`~correo_server.directory.AutoReply`); the mailstore turns
it into a Sieve script with :func:`script` and runs it last in the chain
(:mod:`correo_server.mailstore.rules.chain`), so the reply obeys every rule
of RFC 5230 and RFC 3834 that the engine's ``vacation`` implements: no reply
to the null sender, lists, automatic mail or the mailbox itself, one per
sender per interval (tracked on the mailstore volume).

The window is in the script itself (``currentdate`` against UTC, RFC 5260),
so that the script is the whole truth about what runs; :func:`window`
answers the same question in Python for the Mailbox status (cert-manager
style: on or off, a reason and a sentence).

The ``:handle`` (RFC 5230 4.2) is made of the subject, texts and window:
editing the text or moving the dates starts a new reply that every sender
gets once more; an unchanged auto-reply keeps its record of who has had it.

:func:`script` with an HTML body writes a ``:mime`` ``multipart/alternative``
entity, both parts quoted-printable, so that the script (and the reply) is
7-bit whatever the language of the text.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import quopri
from typing import Protocol

NAME = "autoReply"  # the script's name in diagnostics, logs and status


class AutoReplySpec(Protocol):
    """What is read of an auto-reply (the directory's ``AutoReply`` and the
    operator's model both fit)."""

    body: str
    subject: str | None
    html_body: str | None
    start: str | None
    end: str | None
    interval_days: int
    extra_addresses: tuple[str, ...]


def parse_time(text: str | None) -> dt.datetime | None:
    """An RFC 3339 time (``Z`` or an offset) as an aware UTC datetime; a time
    without a zone is taken as UTC.  None for None; ValueError when malformed."""
    if text is None:
        return None
    value = dt.datetime.fromisoformat(text.strip().replace("z", "Z"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def _iso(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def window(auto: AutoReplySpec, now: float) -> tuple[bool, str, str]:
    """(on now, reason, message) for the auto-reply's start/end window."""
    try:
        start, end = parse_time(auto.start), parse_time(auto.end)
    except ValueError as exc:
        return False, "InvalidTime", f"start or end is not an RFC 3339 time: {exc}"
    when = dt.datetime.fromtimestamp(now, dt.timezone.utc)
    if start is not None and end is not None and end <= start:
        return False, "EmptyWindow", f"end ({_iso(end)}) is not after start ({_iso(start)}): it never replies"
    if start is not None and when < start:
        return False, "NotStarted", f"replies from {_iso(start)}"
    if end is not None and when >= end:
        return False, "Ended", f"replied until {_iso(end)}"
    if end is not None:
        return True, "Replying", f"replies until {_iso(end)}"
    return True, "Replying", "replies until it is turned off"


def quote(text: str) -> str:
    """A Sieve quoted string (RFC 5228 2.4.2): only ``"`` and ``\\`` are escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _string_list(items: list[str]) -> str:
    return "[" + ", ".join(quote(i) for i in items) + "]"


def _qp(text: str) -> str:
    raw = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return quopri.encodestring(raw).decode("ascii").replace("\n", "\r\n")


def mime_entity(body: str, html_body: str, boundary: str) -> str:
    """``multipart/alternative`` with the text and the HTML, both quoted-printable."""
    parts = []
    for ctype, text in (("text/plain", body), ("text/html", html_body)):
        encoded = _qp(text)
        if not encoded.endswith("\r\n"):
            encoded += "\r\n"
        parts.append(f"--{boundary}\r\nContent-Type: {ctype}; charset=utf-8\r\n"
                     f"Content-Transfer-Encoding: quoted-printable\r\n\r\n{encoded}")
    return (f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            + "".join(parts) + f"--{boundary}--\r\n")


def handle(auto: AutoReplySpec) -> str:
    data = "\0".join([auto.subject or "", auto.body, auto.html_body or "", auto.start or "", auto.end or ""])
    return "correo-autoreply-" + hashlib.sha256(data.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def script(auto: AutoReplySpec) -> str:
    """The Sieve script of an auto-reply (raises ValueError for a malformed start/end)."""
    start, end = parse_time(auto.start), parse_time(auto.end)
    requires = ["vacation"]
    tests = []
    if start is not None:
        tests.append(f'currentdate :zone "+0000" :value "ge" "iso8601" {quote(_iso(start))}')
    if end is not None:
        tests.append(f'currentdate :zone "+0000" :value "lt" "iso8601" {quote(_iso(end))}')
    if tests:
        requires += ["date", "relational"]
    args = [f":days {int(auto.interval_days)}"]
    if auto.subject:
        args.append(f":subject {quote(auto.subject)}")
    if auto.extra_addresses:
        args.append(f":addresses {_string_list(list(auto.extra_addresses))}")
    args.append(f":handle {quote(handle(auto))}")
    if auto.html_body:
        args.append(":mime")
        reason = mime_entity(auto.body, auto.html_body, handle(auto).replace("correo-autoreply-", "correo-alt-"))
    else:
        reason = auto.body
    action = "vacation " + " ".join(args) + "\n    " + quote(reason) + ";\n"
    lines = [f"# The autoReply of this Mailbox (made by correo)\nrequire {_string_list(requires)};\n"]
    if tests:
        cond = tests[0] if len(tests) == 1 else "allof(" + ",\n          ".join(tests) + ")"
        lines.append(f"if {cond} {{\n    {action}}}\n")
    else:
        lines.append(action)
    return "".join(lines)
