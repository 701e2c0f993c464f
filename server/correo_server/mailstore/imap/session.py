"""One IMAP session: running commands in the right state, and what the
commands share.

:mod:`.server` reads a complete command and calls :meth:`Session.execute`;
the session parses it with the command registry (:mod:`.commands`), checks
that the current state (:mod:`.states`) is one the command accepts, runs
it, reports what other sessions changed in the selected folder when the
protocol allows (RFC 3501 7.4.1: never EXPUNGE after FETCH, STORE or SEARCH),
and writes the tagged reply.  Storage errors become ``NO`` with RFC 5530
codes.  Commands write untagged responses with :meth:`Session.write` and
return the tagged :class:`~.commands.base.Reply`.  Storage and logins are
behind :class:`~.backend.Backend`.
"""
from __future__ import annotations

import asyncio
import time
from typing import Protocol

from ... import logs
from ...guard import PRELOGIN_INPUT_BYTES
from ...login import wait_hint
from ..context import MailstoreContext
from . import fetch as F
from . import responses as R
from . import utf7
from .fetchcache import KIND as STRUCTURE_KIND
from .fetchcache import Structure, StructureCache
from .backend import (Backend, DiskFull, Folder, FolderError, FolderExists, Mailbox, MessageInfo,
                      NoSuchFolder, QuotaExceeded, StoreError)
from .commands import Registry, default_registry
from .commands.base import Command, Refused, Reply, no
from .reader import BadCommand, SeqSet
from .states import Authenticated, FolderGone, Logout, NotAuthenticated, Selected, SelectedView, State

log = logs.get(__name__)

VERSION = "0.1.0"
DELIMITER = "/"
FLUSH_AT = 256 * 1024
NOT_MUTF7 = "Mailbox name is not valid modified UTF-7"
_CACHE = F.ParsedCache()
_STRUCTURES = StructureCache()


class Channel(Protocol):
    """What a session needs from its connection (implemented by :mod:`.server`)."""

    peer: str
    tls_active: bool
    tls_available: bool
    compress_active: bool

    def write(self, data: bytes) -> None: ...
    def pending(self) -> int: ...
    async def flush(self) -> None: ...
    async def read_line(self) -> bytes: ...
    async def start_tls(self) -> None: ...
    def start_compress(self) -> None: ...


class Closing(Exception):
    """End the connection after writing what is buffered."""


class BadSet(Exception):
    """A message sequence number beyond the last message."""


class Session:
    def __init__(self, ctx: MailstoreContext, channel: Channel, backend: Backend | None = None,
                 registry: Registry | None = None) -> None:
        self.ctx = ctx
        self.ch = channel
        if backend is None:
            from .storebackend import StoreBackend
            backend = StoreBackend(ctx)
        self.backend: Backend = backend
        self.registry = registry if registry is not None else default_registry()
        self.state: State = NotAuthenticated()
        self.enabled: set[str] = set()  # extensions switched on (ENABLE, or implicitly: CONDSTORE)
        self.utf8_names = False  # mailbox names travel as UTF-8, not modified UTF-7 (IMAP4rev2, UTF8=ACCEPT)
        self.failures = 0
        self.closed = False
        self.client_id: dict | None = None
        self.log = log.bind(peer=channel.peer, protocol="imap")
        ms = ctx.config.mailstore
        self.idle_timeout = float(ms.imap_idle_timeout_seconds)
        self.max_literal = ms.max_literal_bytes
        self.max_line = ms.max_line_length
        self._saving: set[asyncio.Task] = set()

    # -- capabilities ----------------------------------------------------------
    def login_allowed(self) -> bool:
        return self.backend.plaintext_allowed(self.ch.peer, self.ch.tls_active)

    def capabilities(self) -> list[str]:
        """Before login, what a client needs to decide how to log in; after,
        everything (as Dovecot does).  Derived from the registered commands
        and extensions."""
        return self.registry.capabilities(self, logged_in=not isinstance(self.state, NotAuthenticated))

    def capability_text(self) -> str:
        return " ".join(self.capabilities())

    def literal_limit(self) -> int:
        """The largest literal the next command may carry, in this state
        (:mod:`.server` refuses a larger one before reading it): a few KB
        before login (:data:`~correo_server.guard.PRELOGIN_INPUT_BYTES`)."""
        if isinstance(self.state, NotAuthenticated):
            return PRELOGIN_INPUT_BYTES
        return self.max_literal

    def line_limit(self) -> int:
        """The longest line the next command may have, in this state."""
        if isinstance(self.state, NotAuthenticated):
            return min(PRELOGIN_INPUT_BYTES, self.max_line)
        return self.max_line

    @property
    def condstore(self) -> bool:
        """CONDSTORE is on (RFC 7162 3.1: ENABLE, or any command using it)."""
        return "CONDSTORE" in self.enabled

    # -- the loop's entry points -------------------------------------------------
    def greeting(self) -> bytes:
        return R.untagged(f"OK [CAPABILITY {self.capability_text()}] {self.ctx.config.hostname} correo IMAP ready.")

    def bye(self, text: str) -> None:
        self.ch.write(R.untagged(f"BYE {text}"))
        self.leave_selected()
        self.state = Logout()
        self.closed = True

    async def execute(self, buf: bytes) -> None:
        """Run one complete command and write its responses."""
        try:
            cmd = self.registry.parse(buf, utf8_names=self.utf8_names)
        except BadCommand as exc:
            self.ch.write(R.tagged(exc.tag or "*", "BAD", exc.message, exc.code))
            return
        flag = self.state.flag
        if flag is None or not (cmd.states & flag):
            self.ch.write(R.tagged(cmd.tag, "BAD", self._wrong_state(cmd.name)))
            return
        if cmd.invalid_mailbox is not None:
            self._refuse_name(cmd)
            return
        for check in self.registry.command_checks:
            refused = check(self, cmd)
            if refused is not None:
                self.ch.write(R.tagged(cmd.tag, refused.status, refused.text, refused.code))
                return
        started = time.monotonic()
        try:
            reply = await cmd.run(self)
        except Closing:
            return
        except Refused as exc:
            reply = exc.reply
        except FolderGone:
            self.bye("Selected mailbox was deleted, have to disconnect.")
            return
        except QuotaExceeded:
            reply = no("Quota exceeded (mailbox for user is full)", "OVERQUOTA")
        except DiskFull:
            reply = no("Temporary failure: not enough disk space on the server", "UNAVAILABLE")
        except NoSuchFolder:
            reply = no("Mailbox doesn't exist", "NONEXISTENT")
        except FolderExists:
            reply = no("Mailbox already exists", "ALREADYEXISTS")
        except (FolderError, StoreError) as exc:
            reply = no(str(exc) or "Operation failed", "CANNOT")
        except (EOFError, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            raise  # the connection is gone or stuck: the server loop ends it
        except Exception:
            self.log.exception("imap_command_failed", command=cmd.name)
            reply = no("Internal error occurred, the server's log has the details", "SERVERBUG")
        self.ctx.metrics.inc("mailstore_imap_commands_total", command=cmd.name.lower())
        self.ctx.metrics.observe("mailstore_imap_command_duration_seconds", time.monotonic() - started,
                                 command=cmd.name.lower())
        if reply is None:  # the command answered itself
            return
        if isinstance(self.state, Selected) and not self.closed:
            try:
                for line in self.state.view.sync(allow_expunge=cmd.reports_expunges(), condstore=self.condstore):
                    self.ch.write(line)
                for hook in self.registry.after_sync:
                    await hook(self)
            except FolderGone:
                self.bye("Selected mailbox was deleted, have to disconnect.")
                return
        status, text, code = reply
        if status == "OK" and cmd.timed:
            text = f"{text} ({time.monotonic() - started:.3f} secs)."
        self.ch.write(R.tagged(cmd.tag, status, text, code))

    def _refuse_name(self, cmd: Command) -> None:
        """A mailbox name that is not modified UTF-7: ``NO [CANNOT]`` (RFC
        3501 5.1.3; Dovecot answers the same without UTF8=ACCEPT).  A
        refused SELECT/EXAMINE leaves no folder selected, as any failed
        SELECT does."""
        if cmd.name in ("SELECT", "EXAMINE"):
            self.leave_selected()
        assert cmd.invalid_mailbox is not None
        self.log.info("imap_invalid_mailbox_name", command=cmd.name, mailbox=cmd.invalid_mailbox[:100])
        self.ch.write(R.tagged(cmd.tag, "NO", NOT_MUTF7, "CANNOT"))

    def _wrong_state(self, name: str) -> str:
        if isinstance(self.state, NotAuthenticated):
            return f"Command {name} is not valid before login"
        cls = self.registry.commands[name]
        if not (cls.states & (Authenticated.flag | Selected.flag)):
            return f"Command {name} is not valid after login"
        return f"Command {name} needs a selected mailbox"

    def close(self) -> None:
        """The connection ended (any reason): let go of the folder."""
        self.leave_selected()
        self.closed = True

    # -- for the commands ----------------------------------------------------------
    def write(self, data: bytes) -> None:
        self.ch.write(data)

    def quote_mailbox(self, name: str) -> bytes:
        """A mailbox name (kept in modified UTF-7) as this session reads
        them: as is, or as UTF-8 once :attr:`utf8_names` is on."""
        if self.utf8_names:
            try:
                name = utf7.decode(name)
            except utf7.InvalidUTF7:
                pass
        return R.mailbox(name)

    async def flush_if_large(self) -> None:
        if self.ch.pending() > FLUSH_AT:
            await self.ch.flush()

    @property
    def mailbox(self) -> Mailbox:
        return self.state.mailbox  # type: ignore[attr-defined]

    @property
    def view(self) -> SelectedView:
        return self.state.view  # type: ignore[attr-defined]

    def leave_selected(self) -> None:
        if isinstance(self.state, Selected):
            self.state.view.close()
            self.state = Authenticated(self.state.address, self.state.mailbox)

    def select(self, view: SelectedView) -> None:
        assert isinstance(self.state, Authenticated)
        self.state = Selected(self.state.address, self.state.mailbox, view)

    def logout(self) -> None:
        self.leave_selected()
        self.state = Logout()
        self.closed = True

    def enable(self, name: str) -> bool:
        """Switch an extension on (ENABLE, or a command that implies it);
        False when it was on already."""
        if name in self.enabled:
            return False
        self.enabled.add(name)
        hook = self.registry.enableable.get(name)
        if hook is not None:
            hook.on_enable(self)
        return True

    def resolve(self, seqset: SeqSet, uid: bool) -> list[int]:
        """The UIDs a set names in the selected folder; :class:`BadSet` for a
        message number beyond the last."""
        try:
            return self.view.resolve(seqset, uid)
        except ValueError:
            raise BadSet() from None

    async def load(self, folder: Folder, msg: MessageInfo) -> F.Loaded:
        """A message's content, parsed on first use, through a small cache."""
        key = (self.backend.cache_key(self.mailbox), folder.name, folder.uidvalidity, msg.uid)
        cached = _CACHE.get(key)
        if cached is not None:
            data, entity = cached
            return F.Loaded(data, entity, on_parse=lambda e: _CACHE.put(key, data, e))
        data = await folder.read(msg.uid)
        loaded = F.Loaded(data, None, on_parse=lambda e: _CACHE.put(key, data, e))
        _CACHE.put(key, data, None)
        return loaded

    def _structure_key(self, folder: Folder) -> tuple:
        return (self.backend.cache_key(self.mailbox), folder.name, folder.uidvalidity)

    async def structures(self, folder: Folder, uids: list[int]) -> dict[int, Structure]:
        """The ENVELOPE/BODYSTRUCTURE/BODY (:mod:`.fetchcache`) known for
        these messages: from memory, else from the folder's index; the rest
        the caller computes and hands to :meth:`keep_structures`."""
        prefix = self._structure_key(folder)
        out: dict[int, Structure] = {}
        missing = []
        for uid in uids:
            found = _STRUCTURES.get(prefix + (uid,))
            if found is None:
                missing.append(uid)
            else:
                out[uid] = found
        if missing:
            for uid, data in (await folder.message_data_for(STRUCTURE_KIND, missing)).items():
                found = Structure.decode(data)
                if found is not None:
                    out[uid] = found
                    _STRUCTURES.put(prefix + (uid,), found)
        return out

    def keep_structures(self, folder: Folder, fresh: dict[int, Structure]) -> None:
        """Structures just computed: in memory now, in the index soon (a
        background write; it is a cache, losing it costs only time)."""
        prefix = self._structure_key(folder)
        for uid, structure in fresh.items():
            _STRUCTURES.put(prefix + (uid,), structure)

        async def save() -> None:
            try:
                await folder.put_message_data(STRUCTURE_KIND, {uid: st.encode() for uid, st in fresh.items()})
            except Exception as exc:  # noqa: BLE001 - the index is only a cache here
                self.log.warning("imap_structure_save_failed", folder=folder.name, error=str(exc))

        task = asyncio.ensure_future(save())
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    # -- logins ---------------------------------------------------------------------
    async def login(self, user: str, password: str, mechanism: str, *, authzid: str | None = None) -> Reply:
        if authzid is not None:  # PLAIN with another authorization identity: only the proxy's
            result = await self.backend.login_as(self.ch.peer, authzid, user, password)
        else:
            result = await self.backend.login(self.ch.peer, user, password)
        if result.address is None:
            return await self.login_failed(result.failure or "invalid", user, result.retry_after,
                                           detail=getattr(result, "detail", ""))
        mailbox = await self.backend.mailbox(result.address)
        self.state = Authenticated(result.address, mailbox)
        self.ctx.metrics.inc("mailstore_logins_total", protocol="imap", result="ok")
        self.log = self.log.bind(user=result.address)
        self.log.info("imap_login", mechanism=mechanism, tls=self.ch.tls_active)
        return Reply("OK", "Logged in", f"CAPABILITY {self.capability_text()}")

    async def login_failed(self, why: str, user: str = "", retry_after: float = 0.0, *, detail: str = "") -> Reply:
        self.failures += 1
        self.ctx.metrics.inc("mailstore_logins_total", protocol="imap", result="failed")
        self.log.info("imap_login_failed", user=user[:100], reason=detail or why)
        if self.failures >= self.ctx.config.auth.max_failures_per_session:
            self.ch.write(R.untagged("BYE Too many invalid authentication attempts."))
            self.state = Logout()
            self.closed = True
            raise Closing()
        if why == "suspended":
            return no("This mailbox is suspended; contact your administrator.", "CONTACTADMIN")
        if why == "moving":
            return no("This mailbox is being moved to another server; try again in a moment.", "UNAVAILABLE")
        return no("Authentication failed." + wait_hint(retry_after), "AUTHENTICATIONFAILED")
