"""A Mailbox's mail rules as the control plane sees them: checked, chosen, explained.  Pure.

``spec.sieve`` (the administrator's Sieve script) and ``spec.autoReply``
reach the mailstore through the directory (``render.directory_entries``).
This module decides what goes there and says what is wrong, for the three
places that need it: ``loading`` (``correo validate``: file, field, line and
column), ``render`` and ``status`` (``Ready=False``, reason ``InvalidSieve``).

**The previous valid script stays active.**  A script that does not compile
never reaches the directory.  The directory itself is the memory of the last
good one: render is given the scripts of the directory now in force
(:func:`scripts_in_directory` of the live directory Secret on Kubernetes, of
``directory.yaml`` locally) and, for a Mailbox whose ``spec.sieve`` does not
compile, writes the script that directory holds for it
(:func:`admin_script`).  So a broken edit changes nothing at delivery; the
Mailbox says ``InvalidSieve`` with the line and column and that the previous
script still runs; the next valid edit replaces it.  What is kept survives
operator restarts (it is in the Secret) and is itself checked again before
it is kept.  A Mailbox whose first script is broken has no admin script
until it is fixed.

Compilation is cached by text (the same script on every pass costs one
compile per process).
"""
from __future__ import annotations

import functools
from typing import Mapping

import yaml

from correo_server import autoreply
from correo_server import directory as dirmod
from correo_server.sieve import SieveError, compile_script

from .model import Mailbox

ADMIN_SCRIPT = "spec.sieve"  # the script's name in diagnostics: the field it comes from


@functools.lru_cache(maxsize=4096)
def _compile_problem(text: str, name: str) -> SieveError | None:
    try:
        compile_script(text, name)
    except SieveError as exc:
        return exc
    return None


def sieve_problem(mailbox: Mailbox) -> SieveError | None:
    """Why ``spec.sieve`` cannot run (line and column in ``.diagnostics``); None when it compiles or is unset."""
    text = mailbox.spec.sieve
    if text is None or not text.strip():
        return None
    return _compile_problem(text, ADMIN_SCRIPT)


def admin_script(mailbox: Mailbox, previous: str | None) -> tuple[str | None, bool]:
    """(the admin script the directory gets, whether it is the previous one kept).

    ``previous`` is the script the directory in force holds for this mailbox."""
    text = mailbox.spec.sieve
    if text is None or not text.strip():
        return None, False
    if sieve_problem(mailbox) is None:
        return text, False
    if previous and _compile_problem(previous, ADMIN_SCRIPT) is None:
        return previous, True
    return None, False


def auto_reply_entry(mailbox: Mailbox) -> dirmod.AutoReply | None:
    """The directory's auto-reply; None when unset or disabled."""
    auto = mailbox.spec.auto_reply
    if auto is None or not auto.enabled:
        return None
    return dirmod.AutoReply(
        body=auto.body, subject=auto.subject or None, html_body=auto.html_body or None,
        start=auto.start, end=auto.end, interval_days=auto.interval_days,
        extra_addresses=tuple(sorted(a.lower() for a in auto.extra_addresses)),
    )


def auto_reply_problem(mailbox: Mailbox) -> str | None:
    """What is wrong with ``spec.autoReply`` that the schema cannot say (a
    window that ends before it starts, a script that does not compile)."""
    entry = auto_reply_entry(mailbox)
    if entry is None:
        return None
    try:
        start, end = autoreply.parse_time(entry.start), autoreply.parse_time(entry.end)
    except ValueError as exc:
        return f"start or end is not an RFC 3339 time: {exc}"
    if start is not None and end is not None and end <= start:
        return "end must be after start"
    problem = _compile_problem(autoreply.script(entry), autoreply.NAME)
    return problem.human() if problem is not None else None


def scripts_in_directory(text: str | None) -> dict[str, str]:
    """Mailbox address (lower case) → admin script, from a ``directory.yaml``
    text; empty when there is none or it cannot be read (nothing is kept then)."""
    if not text:
        return {}
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return {}
    out: dict[str, str] = {}
    for item in doc.get("mailboxes") or [] if isinstance(doc, dict) else []:
        if isinstance(item, dict) and isinstance(item.get("sieve"), str) and isinstance(item.get("address"), str):
            out[item["address"].lower()] = item["sieve"]
    return out


def previous_for(mailbox: Mailbox, previous: Mapping[str, str] | None) -> str | None:
    return (previous or {}).get(mailbox.spec.address.lower())
