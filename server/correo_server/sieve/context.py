"""What a Sieve run is given besides the script and the message.

Pure values and interfaces.  Final delivery builds an :class:`Envelope` (the
SMTP/LMTP envelope for this recipient) and a :class:`Context` (whose mailbox
this is, the clock, the limits, and three interfaces it implements over the
mailstore: :class:`TrackingState` for vacation and duplicate tracking,
:class:`IncludeResolver` for ``include``, and ``folder_exists`` for
``mailboxexists``).  Nothing here writes: the run reads the tracking state
and returns the updates (see :mod:`.actions`).
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from .compiler import Script


@dataclass(frozen=True)
class Envelope:
    sender: str  # MAIL FROM; "" for the null reverse-path <>
    recipient: str  # RCPT TO that brought the message to this mailbox (e.g. ana+news@example.com)
    original_recipient: str | None = None  # before aliases and forwards, when known


@dataclass(frozen=True)
class ScanVerdict:
    """What the content scanners said, for ``spamtest`` and ``virustest`` (RFC 5235).

    ``spam_score`` is the scanner's score (rspamd, SpamAssassin) and
    ``spam_max`` the score that means "certainly spam" (the reject threshold);
    the engine normalises them to 1..10 and 0..100.  ``virus_level`` is
    already RFC 5235's scale: 1 clean, 2 replaced, 3 cured, 4 possibly
    infected, 5 infected.  None: that scanner did not run ("0")."""

    spam_score: float | None = None
    spam_max: float = 15.0
    virus_level: int | None = None
    spam_text: str = ""  # optional text after the number (RFC 5235 3.1)
    virus_text: str = ""


class TrackingState(Protocol):
    """The mailbox's record of vacation replies and duplicate ids (read-only here)."""

    def seen(self, key: str, now: float) -> bool:
        """``key`` is recorded and has not expired at ``now``."""


class IncludeResolver(Protocol):
    def resolve(self, name: str, location: str) -> "Script | None":
        """The compiled script ``name`` at ``location`` ("personal" or "global");
        None when it does not exist.  May raise a SieveError if it does not compile."""


@dataclass(frozen=True)
class Limits:
    max_actions: int = 32  # after duplicates are merged (Pigeonhole's sieve_max_actions)
    max_redirects: int = 4  # Pigeonhole's sieve_max_redirects
    max_include_depth: int = 10
    max_includes: int = 255
    cpu_seconds: float = 2.0  # CPU time of one run, includes and body tests included
    max_variables: int = 255  # per scope
    max_variable_size: int = 4096  # characters; longer values are cut (RFC 5229 6)
    max_received: int = 50  # a message with more Received: fields is a loop: no redirect
    vacation_min_seconds: int = 0  # :seconds below this is raised (RFC 6131)
    vacation_default_seconds: int = 7 * 86400
    vacation_max_seconds: int = 90 * 86400
    duplicate_default_seconds: int = 7 * 86400  # RFC 7352 3.3: "around 7 days"
    duplicate_max_seconds: int = 30 * 86400


@dataclass(frozen=True)
class Context:
    mailbox: str  # the mailbox's canonical address
    addresses: tuple[str, ...] = ()  # its other addresses (aliases)
    now: float | None = None  # epoch seconds of this delivery; time.time() if None
    zone: dt.tzinfo | None = None  # the "local" zone of date tests; the system's if None
    hostname: str = "localhost"  # for Message-IDs of replies
    recipient_delimiter: str = "+"
    state: TrackingState | None = None
    includes: IncludeResolver | None = None
    folder_exists: Callable[[str], bool] | None = None
    verdict: ScanVerdict | None = None
    limits: Limits = field(default_factory=Limits)
    cpu_clock: Callable[[], float] = time.thread_time
    new_message_id: Callable[[], str] | None = None  # tests inject a fixed one
