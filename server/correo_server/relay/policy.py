"""The relay's decisions, as pure functions: who may send, as whom, to whom.

* Port 25 (:attr:`Listener.SMTP`) takes mail for hosted domains and their
  alias domains only; an unknown local recipient is ``550 5.1.1``; any other
  destination is ``554 5.7.1`` (never an open relay).
* A suspended mailbox (or an alias of one) is ``550 5.2.1`` at RCPT on every
  port: refused while the sender is still connected, rather than accepted
  and bounced later to a sender address that may be forged (backscatter).
  Over quota is the mailstore's to say; the relay cannot know it.
* Submission and SMTPS require AUTH before MAIL; the envelope sender must be
  the authenticated mailbox or one of its aliases, never the null sender
  ``<>`` (``553 5.7.1``); they may send anywhere.
* Address forms that have been used to trick servers into relaying --
  source routes ``<@local:user@foreign>``, ``user%foreign@local``, bang
  paths ``foreign!user@local`` and quoted ``"user@foreign"@local`` -- are
  refused on every port with ``554 5.7.1`` when they point at a hosted domain
  (or at no domain), whoever asks.  No correo mailbox can have such a local
  part, so nothing legitimate is lost.

:mod:`.smtp` asks these functions and sends the reply they return (None
means go ahead).  :class:`RateLimiter` takes its clock as an argument so that
tests never sleep.
"""
from __future__ import annotations

import enum
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from ..config import Domain, ServerConfig
from ..directory import Directory, MailboxEntry
from ..wire.paths import Mailbox
from ..wire.replies import Reply

RELAY_HACK_CHARACTERS = "%!@"


class Listener(str, enum.Enum):
    SMTP = "smtp"  # port 25: inbound MX
    SUBMISSION = "submission"  # port 587: STARTTLS, then AUTH
    SMTPS = "smtps"  # port 465: implicit TLS, then AUTH

    @property
    def requires_auth(self) -> bool:
        return self is not Listener.SMTP


def hosted_domain(config: ServerConfig, domain: str) -> Domain | None:
    """The hosted Domain for a name, matching internationalised names in
    either form (U-label ``bücher.example`` or A-label ``xn--bcher-kva.example``)."""
    if not domain or domain.startswith("["):
        return None
    found = config.domain_for(domain)
    if found is not None:
        return found
    try:
        if not domain.isascii():
            return config.domain_for(domain.encode("idna").decode("ascii"))
        if "xn--" in domain:
            return config.domain_for(domain.encode("ascii").decode("idna"))
    except UnicodeError:
        return None
    return None


def lookup_form(box: Mailbox, config: ServerConfig | None) -> str:
    """The address to look up in the directory: a hosted domain written in
    another form (U-label, alias) is replaced by its configured name."""
    hosted = hosted_domain(config, box.domain) if config is not None else None
    return Mailbox(box.local, hosted.name).address if hosted is not None else box.address


@dataclass(frozen=True)
class MailOptions:
    """The parameters of an accepted ``MAIL FROM``."""

    size: int | None = None
    body: str | None = None  # "7BIT" or "8BITMIME"
    smtputf8: bool = False


def check_mail_params(params: dict[str, str | None], *, extended: bool, max_bytes: int) -> MailOptions | Reply:
    """Judge ``MAIL FROM`` parameters (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531
    SMTPUTF8; RFC 4954's AUTH= is accepted and ignored)."""
    if params and not extended:
        return Reply(501, "5.5.4", "Parameters require EHLO", "bad_parameter")
    size = body = None
    smtputf8 = False
    for key, value in params.items():
        if key == "SIZE":
            if value is None or not value.isdigit() or len(value) > 20:
                return Reply(501, "5.5.4", "SIZE needs a number", "bad_parameter")
            size = int(value)
            if max_bytes and size > max_bytes:
                return Reply(552, "5.3.4", f"Message size exceeds fixed maximum message size ({max_bytes} bytes)",
                             "size")
        elif key == "BODY":
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                return Reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME", "bad_parameter")
            body = value.upper()
        elif key == "SMTPUTF8":
            if value is not None:
                return Reply(501, "5.5.4", "SMTPUTF8 takes no value", "bad_parameter")
            smtputf8 = True
        elif key == "AUTH":
            continue
        else:
            return Reply(555, "5.5.4", f"MAIL parameter {key} not recognized or not implemented", "bad_parameter")
    return MailOptions(size, body, smtputf8)


def check_rcpt_params(params: dict[str, str | None]) -> Reply | None:
    for key in params:
        return Reply(555, "5.5.4", f"RCPT parameter {key} not recognized or not implemented", "bad_parameter")
    return None


def needs_smtputf8(address: Mailbox, smtputf8: bool) -> Reply | None:
    """RFC 6531 section 3.4: a non-ASCII address needs the SMTPUTF8 parameter."""
    if not smtputf8 and not address.is_ascii:
        return Reply(553, "5.6.7", "Non-ASCII address requires the SMTPUTF8 parameter", "bad_address")
    return None


def check_sender(listener: Listener, mailbox: MailboxEntry | None, sender: Mailbox | None,
                 directory: Directory) -> Reply | None:
    """May this session use this envelope sender?

    Port 25 takes any well-formed sender (this is where the world's mail
    arrives from), the null sender ``<>`` included (bounces).  On submission
    the sender must be owned by the authenticated mailbox.  The null sender
    is not: it is nobody's address, and a message sent with it would belong
    to no hosted domain (the queue could not apply the domain's retry
    policy or count it in the domain's figures) and could never be
    returned to the person who sent it.
    """
    if not listener.requires_auth:
        return None
    if mailbox is None:
        return Reply(530, "5.7.0", "Authentication required", "auth_required")
    if sender is None:
        return Reply(553, "5.7.1", "<>: Sender address rejected: the null sender is not allowed on submission; "
                     f"send as <{mailbox.address}> or one of its aliases", "sender_mismatch")
    if directory.owns(mailbox, lookup_form(sender, directory.config)):
        return None
    return Reply(553, "5.7.1", f"<{sender.address}>: Sender address rejected: not owned by the authenticated user",
                 "sender_mismatch")


def resolve_postmaster(rcpt: Mailbox, config: ServerConfig) -> Mailbox:
    """``RCPT TO:<Postmaster>`` without a domain (RFC 5321 section 4.5.1) means
    the postmaster of the first hosted domain."""
    if not rcpt.domain and not rcpt.route and rcpt.local.lower() == "postmaster" and config.domains:
        return Mailbox("postmaster", config.domains[0].name)
    return rcpt


def check_recipient(listener: Listener, authenticated: bool, rcpt: Mailbox,
                    config: ServerConfig, directory: Directory) -> Reply | None:
    """May this session send to this recipient?  (See the module docstring.)"""
    if rcpt.route:
        return Reply(554, "5.7.1", f"<{rcpt.address}>: Relay access denied (source routes are not accepted)",
                     "relay_denied")
    tricky = any(ch in rcpt.local for ch in RELAY_HACK_CHARACTERS)
    if not rcpt.domain:
        if tricky:
            return Reply(554, "5.7.1", f"<{rcpt.address}>: Relay access denied", "relay_denied")
        return Reply(553, "5.1.3", f"<{rcpt.address}>: Recipient address must include a domain", "bad_address")
    if hosted_domain(config, rcpt.domain) is not None:
        if tricky:
            return Reply(554, "5.7.1", f"<{rcpt.address}>: Relay access denied (%, ! and quoted @ are not relayed)",
                         "relay_denied")
        entry = directory.recipient(lookup_form(rcpt, config))  # subaddress and catch-all too
        if entry is None:
            return Reply(550, "5.1.1", f"<{rcpt.address}>: Recipient address rejected: User unknown",
                         "unknown_recipient")
        if entry.suspended:
            return Reply(550, "5.2.1", f"<{rcpt.address}>: mailbox is disabled", "mailbox_disabled")
        return None
    if not authenticated:
        return Reply(554, "5.7.1", f"<{rcpt.address}>: Relay access denied", "relay_denied")
    if rcpt.literal:
        return Reply(553, "5.1.3", f"<{rcpt.address}>: Address literals are not accepted as recipients",
                     "bad_address")
    return None


class RateLimiter:
    """At most ``limit`` events per ``period`` seconds per key (a sliding window).

    The relay counts *accepted messages* per client address: ``allowed`` is
    asked at ``MAIL FROM`` (so a client over its budget wastes no bandwidth),
    ``record`` is called when a message is accepted.
    """

    def __init__(self, limit: int, period: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 50000) -> None:
        self.limit = limit
        self.period = period
        self.clock = clock
        self.max_keys = max_keys
        self._events: dict[str, deque[float]] = {}

    def _window(self, key: str) -> deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        horizon = self.clock() - self.period
        while events and events[0] <= horizon:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        return events

    def allowed(self, key: str) -> bool:
        if self.limit <= 0:
            return True
        events = self._window(key)
        return events is None or len(events) < self.limit

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may send again (0 when it may now)."""
        events = self._window(key)
        if events is None or len(events) < self.limit:
            return 0.0
        return max(0.0, events[0] + self.period - self.clock())

    def record(self, key: str) -> None:
        if self.limit <= 0:
            return
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= self.max_keys:  # bound memory under a spray of addresses
                for stale in list(self._events)[: self.max_keys // 2]:
                    self._window(stale)
                if len(self._events) >= self.max_keys:
                    self._events.pop(next(iter(self._events)))
            events = self._events[key] = deque()
        events.append(self.clock())
        while len(events) > self.limit:
            events.popleft()

    def rate_limited_reply(self, key: str) -> Reply:
        wait = int(self.retry_after(key)) + 1
        return Reply(450, "4.7.1", f"Too many messages from your address; try again in {wait} seconds",
                     "rate_limited")
