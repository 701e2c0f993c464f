"""What the mail rules of each mailbox are and did, for ``/status`` and metrics.

:class:`RulesLog` keeps, per mailbox, the number of rule errors at delivery
and the latest one (which script, what, when), in memory since the process
started (like :mod:`..refusals`).  :func:`mailbox_rules` makes a mailbox's
``rules`` entry of the mailstore's ``/status`` document: whether an
administrator's script and an auto-reply are in force, the name of the
user's active script, and those errors; the control plane copies it onto
the Mailbox's ``status.rules``.

Metric families (registered by :func:`register_metrics`):

* ``mailstore_sieve_actions_total{action}``: keep, fileinto, redirect,
  reject, discard, vacation, carried out at delivery;
* ``mailstore_sieve_vacation_total{result}``: vacation and auto-reply
  decisions (``Reply`` sent, or why not: ``MailingList``, ``NullSender``,
  ``AlreadyReplied``...);
* ``mailstore_sieve_errors_total{script,kind}``: scripts that failed (the
  message was kept in INBOX), by role (admin, user, autoReply, delivery)
  and kind (compile, limit, conflict, include, error, folder, submit).
"""
from __future__ import annotations

from dataclasses import dataclass

from ... import autoreply
from ...directory import MailboxEntry
from ...statusdoc import rfc3339

ACTIONS = "mailstore_sieve_actions_total"
VACATION = "mailstore_sieve_vacation_total"
ERRORS = "mailstore_sieve_errors_total"


def register_metrics(metrics) -> None:
    metrics.counter(ACTIONS, "Sieve actions carried out at delivery, by action")
    metrics.counter(VACATION, "Vacation and auto-reply decisions, by result (Reply or why none was sent)")
    metrics.counter(ERRORS, "Mail rule errors at delivery (the message was kept), by script and kind")


@dataclass(frozen=True)
class RuleErrors:
    count: int = 0
    last_time: float | None = None
    last_script: str = ""
    last_message: str = ""


class RulesLog:
    """Rule errors by canonical mailbox address (lower case)."""

    def __init__(self) -> None:
        self._by_mailbox: dict[str, RuleErrors] = {}

    def record(self, mailbox: str, script: str, message: str, when: float) -> None:
        key = mailbox.lower()
        self._by_mailbox[key] = RuleErrors(self.get(key).count + 1, when, script, message[:1000])

    def get(self, mailbox: str) -> RuleErrors:
        return self._by_mailbox.get(mailbox.lower(), RuleErrors())


def mailbox_rules(entry: MailboxEntry, user_script: str | None, errors: RuleErrors, now: float) -> dict | None:
    """The ``rules`` entry of one mailbox in ``/status``; None for a mailbox
    without rules that never had an error (the entry is left out)."""
    if not entry.sieve and entry.auto_reply is None and not user_script and errors.last_time is None:
        return None
    doc: dict = {
        "adminScript": bool(entry.sieve),
        "autoReply": entry.auto_reply is not None and autoreply.window(entry.auto_reply, now)[0],
        "errors": errors.count,
    }
    if user_script:
        doc["userScript"] = user_script
    if errors.last_time is not None:
        doc["lastError"] = {"time": rfc3339(errors.last_time), "script": errors.last_script,
                            "message": errors.last_message}
    return doc
