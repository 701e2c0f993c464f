"""IMAP commands and extensions, one module each.

Every module in this package has a ``register(registry)`` function; the
registry (:class:`.base.Registry`) is built from all of them
(:func:`build_registry`, found by name, in alphabetical order), and
everything the server knows by name comes from it: the command table, the
states each command is valid in, ``UID`` forms, the CAPABILITY list (before
and after login), ENABLE targets, STATUS items, SELECT parameters, FETCH
items and modifiers, STORE modifiers and SEARCH keys.  Nothing outside the
module that registers a name knows it.

A command is a frozen dataclass deriving from :class:`.base.Command`::

    @dataclass(frozen=True, kw_only=True)
    class Move(Command):
        name = "MOVE"
        states = State.SELECTED
        capability = "MOVE"            # listed after login (omit: part of IMAP4rev1)
        uid_form = True                # UID MOVE exists
        usage = "{cmd} needs a {set} and a mailbox name"   # said when it ends too early

        set: SeqSet                    # the typed arguments
        mailbox: str

        @classmethod
        def parse(cls, r: Reader, p: Parse) -> "Move":   # r is after the name
            r.sp(); seqset = r.seq_set(); r.sp()
            return cls(tag=p.tag, uid=p.uid, set=seqset, mailbox=r.mailbox())

        async def run(self, s: Session) -> Reply:
            ...                         # s.view, s.mailbox, s.write(...), s.resolve(...)
            return ok("Move completed.")

    def register(registry: Registry) -> None:
        registry.command(Move)

How to add an extension (ESEARCH, QRESYNC, SORT, BINARY, ... — RFC in hand):

1. Make ``commands/<extension>.py`` with ``register(registry)``.  New
   commands: a :class:`~.base.Command` each (``registry.command``; its
   ``capability`` is listed after login).  A capability without a command
   of its own: ``registry.capability("X", when=When.ALWAYS)`` (or a function
   of the session, for values that depend on it: ``APPENDLIMIT=<n>``).
   Before login, list only what a client needs to log in
   (``When.BEFORE_LOGIN``).
2. Extend other commands through their extension points, never by editing
   them: ``registry.enable(name, on_enable)`` (ENABLE), ``status_item``
   (STATUS and LIST-STATUS; a value that is not a number comes from its
   ``fetch``), ``select_modifier`` (SELECT/EXAMINE parameters; ``after``
   runs once the folder is selected), ``fetch_item`` / ``fetch_modifier``
   (FETCH; items are :class:`..fetch.FetchItem`, which may ``preload`` for
   all the UIDs; a modifier's ``before`` sees the command), ``store_modifier``
   (STORE), ``search_key`` (SEARCH; keys are :class:`..search.Key`, which
   may ask for the message summaries), ``search_return`` and
   ``search_reply`` (SEARCH RETURN and the ESEARCH form; ``search_default``
   for a mode that always wants it), ``sort_key`` (SORT criteria),
   ``list_select_option`` / ``list_return_option`` / ``list_attributes``
   (LIST), ``create_param`` / ``create_codes`` (CREATE), ``append_data``
   (other forms of APPEND's message), ``view_setup`` and
   ``select_responses`` (the selected view and SELECT's lines),
   ``command_checks`` (a mode's objection before a command runs),
   ``after_sync`` (more unsolicited lines after the selected view's
   updates, each command and in IDLE: CONTEXT=SEARCH's ADDTO/REMOVEFROM;
   the view's ``on_remove`` speaks before an expunge is reported).  An
   extension's hook may end the command with :class:`.base.Refused`.
   :mod:`.condstore` is the worked example: one module adds an ENABLE
   target, a STATUS item, a SELECT parameter, a FETCH item and modifier, a
   STORE modifier and a SEARCH key; :mod:`.qresync` builds on it.
3. Session-wide modes are names in ``session.enabled`` (``session.enable``
   runs the target's ``on_enable``).  The few places the core consults a
   mode are marked: how selected-folder changes are reported
   (:class:`..states.SelectedView`'s ``vanished``, ``report_recent`` and
   ``uidonly``, set by QRESYNC, IMAP4rev2 and UIDONLY; every FETCH response
   starts with the view's ``fetch_head``), MODSEQ in untagged FETCH,
   HIGHESTMODSEQ in SELECT/EXPUNGE, and mailbox names as UTF-8
   (``session.utf8_names``).
4. A literal limit per state (before login, say) belongs to the session
   (:meth:`..session.Session.literal_limit`), which the reader asks before
   each command.
5. Tests: the RFC's examples against the running server
   (``tests/mailstore``), and the imaptest script of the extension if
   Dovecot's suite has one (``tests/mailstore/test_imaptest.py`` runs them all).
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from types import ModuleType
from typing import Iterable

from .base import Registry

__all__ = ["Registry", "build_registry", "default_registry", "command_modules"]

_NOT_COMMANDS = {"base"}


def command_modules() -> list[ModuleType]:
    """Every command module of this package, in name order."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_COMMANDS)
    return [importlib.import_module(f"{__name__}.{n}") for n in names]


def build_registry(modules: Iterable[ModuleType] | None = None) -> Registry:
    """A registry of the given command modules (default: all of this package)."""
    registry = Registry()
    for module in (command_modules() if modules is None else modules):
        registry.module = module.__name__.rsplit(".", 1)[-1]
        module.register(registry)
    registry.module = ""
    return registry


@cache
def default_registry() -> Registry:
    return build_registry()
