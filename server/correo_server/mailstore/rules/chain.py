"""Several Sieve scripts on one message: the administrator's, the user's, then the auto-reply.  Pure.

The order is the issue's and Pigeonhole's (``sieve_before``, the user's
active script): the scripts form a sequence in which the next one runs only
when the one before ended with a keep, implicit or explicit.  What each
script did besides keeping (``fileinto``, ``redirect``, ``vacation``...)
stays done; the keep is handed on, and the last script that runs decides
what becomes of it.  A script that cancels the keep (``fileinto`` without
``:copy``, ``discard``, ``redirect``, ``reject``) ends the sequence.

A script that fails at run time ends with an implicit keep and its error
(RFC 5228 2.10.6), so the next script still runs and the mail is never lost;
the caller logs and counts :attr:`ChainResult.errors`.

The auto-reply (``spec.autoReply`` as a script, :mod:`correo_server.autoreply`)
is not part of the sequence: it runs after it whenever the outcome puts a
copy of the message where its owner reads mail, i.e. stores a copy in a
folder other than Junk and Trash (and nothing rejected it) — an
out-of-office answers mail that arrived, wherever a rule filed it, and never
mail the rules threw away as spam.  Only one vacation reply per message:
when a script already ran ``vacation``, the auto-reply does not run.

:func:`run_chain` returns the merged actions for delivery to carry out
(:class:`~correo_server.sieve.actions.Result` semantics: a final
:class:`~correo_server.sieve.Keep` is the implicit or explicit keep).
"""
from __future__ import annotations

from dataclasses import dataclass

from ...sieve import (Action, Context, Discard, Envelope, FileInto, Keep, Redirect, Reject, Result, Script,
                      StateUpdate, Vacation, run)
from ...sieve.errors import SieveRuntimeError
from ...sieve.message import MessageView

ADMIN, USER, AUTOREPLY = "admin", "user", "autoReply"
# Where mail its owner does not read lands: the auto-reply does not answer it.
UNREAD_FOLDERS = frozenset({"junk", "trash", "spam"})


@dataclass(frozen=True)
class Step:
    role: str  # ADMIN, USER or AUTOREPLY
    name: str  # the script's name (in logs and status)
    script: Script


@dataclass(frozen=True)
class ScriptRun:
    role: str
    name: str
    result: Result


@dataclass(frozen=True)
class ChainResult:
    actions: tuple[Action, ...]
    runs: tuple[ScriptRun, ...]

    @property
    def errors(self) -> list[tuple[ScriptRun, SieveRuntimeError]]:
        return [(r, r.result.error) for r in self.runs if r.result.error is not None]

    @property
    def state_updates(self) -> tuple[StateUpdate, ...]:
        """The ``duplicate`` entries of every script that ran without error."""
        return tuple(u for r in self.runs if r.result.error is None for u in r.result.state_updates)

    def of(self, kind: type) -> list:
        return [a for a in self.actions if isinstance(a, kind)]


def _merge_keep(previous: Keep | None, keep: Keep) -> Keep:
    """A keep handed on: the later script's flags win when it set any."""
    if keep.flags is None and previous is not None:
        return Keep(flags=previous.flags, implicit=keep.implicit)
    return keep


def reaches_owner(actions: tuple[Action, ...] | list[Action]) -> bool:
    """Some copy lands in a folder its owner reads (not Junk or Trash) and nothing rejected it."""
    if any(isinstance(a, Reject) for a in actions):
        return False
    for a in actions:
        if isinstance(a, Keep):
            return True
        if isinstance(a, FileInto) and a.folder.rsplit("/", 1)[-1].lower() not in UNREAD_FOLDERS:
            return True
    return False


def run_chain(steps: list[Step], autoreply: Script | None, message: bytes | MessageView, envelope: Envelope,
              context: Context) -> ChainResult:
    """Run the sequence, then the auto-reply (see the module docstring)."""
    view = message if isinstance(message, MessageView) else MessageView(message)
    actions: list[Action] = []
    runs: list[ScriptRun] = []
    keep: Keep | None = Keep(implicit=True)  # no script at all: the implicit keep
    replied = False
    for step in steps:
        result = run(step.script, view, envelope, context)
        runs.append(ScriptRun(step.role, step.name, result))
        kept: Keep | None = None
        for action in result.actions:
            if isinstance(action, Keep):
                kept = _merge_keep(kept or keep, action)
            elif isinstance(action, Vacation):
                if not replied:
                    actions.append(action)
                replied = True
            else:
                actions.append(action)
        keep = kept
        if keep is None:
            break  # the keep was cancelled: the sequence ends here
    if keep is not None:
        actions.append(keep)
    if autoreply is not None and not replied and reaches_owner(actions):
        result = run(autoreply, view, envelope, context)
        runs.append(ScriptRun(AUTOREPLY, AUTOREPLY, result))
        actions += [a for a in result.actions if isinstance(a, Vacation)]
    return ChainResult(tuple(actions), tuple(runs))


def describe(actions: tuple[Action, ...] | list[Action]) -> list[str]:
    """Short words for logs and metrics: keep, fileinto, redirect, reject, discard, vacation."""
    out = []
    for a in actions:
        if isinstance(a, Keep):
            out.append("keep")
        elif isinstance(a, FileInto):
            out.append("fileinto")
        elif isinstance(a, Redirect):
            out.append("redirect")
        elif isinstance(a, Reject):
            out.append("reject")
        elif isinstance(a, Discard):
            out.append("discard")
        elif isinstance(a, Vacation):
            out.append("vacation")
    return out
