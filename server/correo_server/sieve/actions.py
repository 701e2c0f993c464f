"""What a Sieve run decides: the actions the mailstore then carries out.

Pure values, the interface between the engine and final delivery.  A run
(:func:`~.interpreter.run`) returns a :class:`Result`; delivery walks
``result.actions`` in order:

=================  =====================================================
action             what delivery does
=================  =====================================================
:class:`Keep`      store in INBOX with ``flags`` (None: no imap4flags;
                   the store's default flags)
:class:`FileInto`  store in ``folder`` (create it first when ``create``);
                   a folder that does not exist and cannot be created:
                   store in INBOX instead and log it (never lose mail)
:class:`Redirect`  submit the message to the queue for ``address``
                   (:func:`~.outgoing.redirect_message` builds it)
:class:`Reject`    refuse: LMTP ``550 5.7.1`` with the reason
                   (:func:`~.outgoing.refusal_lines`), or for ``reject``
                   with non-ASCII text an MDN (:func:`~.outgoing.reject_mdn`)
:class:`Discard`   nothing (listed so that logs can say why nothing kept)
:class:`Vacation`  submit ``reply`` to the queue if it is not None, then
                   record ``track`` in the tracking state
=================  =====================================================

After the message is delivered, record ``result.state_updates`` (the
``duplicate`` test's entries, RFC 7352 3: only after a successful run) in
the tracking state.  ``result.error`` is set when the script failed at run
time; ``actions`` is then just the implicit keep, so the message lands in
INBOX and nothing else happens (RFC 5228 2.10.6).
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import SieveRuntimeError


@dataclass(frozen=True)
class Keep:
    flags: tuple[str, ...] | None = None
    implicit: bool = False


@dataclass(frozen=True)
class FileInto:
    folder: str
    flags: tuple[str, ...] | None = None
    create: bool = False
    copy: bool = False


@dataclass(frozen=True)
class Redirect:
    address: str
    copy: bool = False


@dataclass(frozen=True)
class Reject:
    reason: str
    extended: bool = False  # ereject (RFC 5429 2.1): always at the protocol level


@dataclass(frozen=True)
class Discard:
    pass


@dataclass(frozen=True)
class OutgoingMessage:
    """A new message for the queue: envelope and the bytes of the message."""

    sender: str  # "" is the null reverse-path <>
    recipients: tuple[str, ...]
    data: bytes


@dataclass(frozen=True)
class StateUpdate:
    """Remember ``key`` in the tracking state until ``expires`` (epoch seconds)."""

    key: str
    expires: float


@dataclass(frozen=True)
class Vacation:
    recipient: str  # the envelope sender the reply is (or would be) for
    reply: OutgoingMessage | None  # None: not sent, ``reason`` says why
    reason: str  # a CamelCase decision reason ("Reply", "MailingList", ...)
    message: str  # the decision in words, for logs
    track: StateUpdate | None = None  # record once ``reply`` is queued
    period: int = 0  # seconds between two replies to one sender
    subject: str | None = None  # the :subject given, if any
    text: str = ""  # the reason (the reply's body, or MIME entity with :mime)


Action = Keep | FileInto | Redirect | Reject | Discard | Vacation


@dataclass(frozen=True)
class Result:
    actions: tuple[Action, ...]
    error: SieveRuntimeError | None = None
    state_updates: tuple[StateUpdate, ...] = ()
    cpu_seconds: float = 0.0

    @property
    def implicit_keep(self) -> bool:
        return any(isinstance(a, Keep) and a.implicit for a in self.actions)

    def of(self, kind: type) -> list:
        return [a for a in self.actions if isinstance(a, kind)]

    def stores(self) -> list[tuple[str, tuple[str, ...] | None]]:
        """(folder, flags) of every copy stored in this mailbox; INBOX for keeps."""
        out = []
        for a in self.actions:
            if isinstance(a, Keep):
                out.append(("INBOX", a.flags))
            elif isinstance(a, FileInto):
                out.append((a.folder, a.flags))
        return out

