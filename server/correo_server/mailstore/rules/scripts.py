"""Which scripts a mailbox runs at delivery, compiled once per text.

* the administrator's: ``MailboxEntry.sieve`` from the directory (the
  renderer only ever writes one that compiles, see
  ``correo_operator.mailrules``);
* the user's: the active script of the mailbox's ManageSieve storage
  (:class:`~..managesieve.storage.ScriptStorage`, checked when uploaded);
* the auto-reply: ``MailboxEntry.auto_reply`` as a script
  (:func:`correo_server.autoreply.script`).

:class:`ScriptCache` keeps compiled scripts by their text (an LRU bound), so
a delivery costs a read of the user's active script, not a compile.  A
script that does not compile (an engine older than the one that checked it,
a file edited by hand) is returned as its :class:`~correo_server.sieve.SieveError`:
delivery skips it, keeps the message, and counts the error.  Blocking
(files): called on a worker thread.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from ... import autoreply
from ...directory import AutoReply, MailboxEntry
from ...sieve import Diagnostic, Script, SieveError, compile_script
from ..managesieve.storage import NoSuchScript, ScriptStorage
from .chain import ADMIN, USER, Step

CACHE_SIZE = 1024


@functools.lru_cache(maxsize=CACHE_SIZE)
def _compiled(text: str, name: str) -> Script | SieveError:
    try:
        return compile_script(text, name)
    except SieveError as exc:
        return exc


@functools.lru_cache(maxsize=CACHE_SIZE)
def _autoreply(auto: AutoReply) -> Script | SieveError:
    try:
        text = autoreply.script(auto)
    except ValueError as exc:  # a malformed start/end the schema let through
        return SieveError(Diagnostic(f"start or end is not an RFC 3339 time: {exc}", 0, 0, autoreply.NAME))
    return _compiled(text, autoreply.NAME)


@dataclass(frozen=True)
class Problem:
    role: str
    name: str
    error: SieveError


@dataclass(frozen=True)
class Scripts:
    steps: tuple[Step, ...]  # admin, then user
    autoreply: Script | None
    problems: tuple[Problem, ...]  # scripts skipped because they do not compile

    @property
    def empty(self) -> bool:
        return not self.steps and self.autoreply is None


def user_script(storage: ScriptStorage) -> tuple[str, bytes] | None:
    """(name, text) of the active script, None when there is none."""
    name = storage.active()
    if name is None:
        return None
    try:
        return name, storage.get(name)
    except NoSuchScript:  # deleted meanwhile
        return None


def scripts_for(entry: MailboxEntry, storage: ScriptStorage) -> Scripts:
    steps: list[Step] = []
    problems: list[Problem] = []
    if entry.sieve:
        admin = _compiled(entry.sieve, "spec.sieve")
        if isinstance(admin, SieveError):
            problems.append(Problem(ADMIN, "spec.sieve", admin))
        else:
            steps.append(Step(ADMIN, "spec.sieve", admin))
    found = user_script(storage)
    if found is not None:
        name, data = found
        user = _compiled(data.decode("utf-8", "replace"), name)
        if isinstance(user, SieveError):
            problems.append(Problem(USER, name, user))
        else:
            steps.append(Step(USER, name, user))
    auto = None
    if entry.auto_reply is not None:
        compiled = _autoreply(entry.auto_reply)
        if isinstance(compiled, SieveError):
            problems.append(Problem("autoReply", autoreply.NAME, compiled))
        else:
            auto = compiled
    return Scripts(tuple(steps), auto, tuple(problems))
