"""One IMAP session: the command handlers of every state.

:mod:`.server` reads a complete command and calls :meth:`Session.execute`;
the session parses it (:mod:`.parser`), checks that the current state
(:mod:`.states`) allows it, runs ``cmd_<name>``, reports what other sessions
changed in the selected folder when the protocol allows (RFC 3501 7.4.1:
never EXPUNGE during FETCH, STORE or SEARCH), and writes the tagged reply.
Handlers write untagged responses to the :class:`Channel` and return the
tagged reply as ``(status, text, code)``.  Storage is :mod:`..store`; logins
go through :func:`correo_server.login.check_login`.
"""
from __future__ import annotations

import asyncio
import re
import time
from typing import Protocol

from ... import logs
from ...guard import plaintext_login_allowed
from ...login import SaslError, check_login, decode_sasl_plain
from ..context import MailstoreContext
from ..store import (DiskFull, FolderError, FolderExists, MessageGone, NoSuchFolder, QuotaExceeded,
                     StoreError)
from . import fetch as F
from . import responses as R
from . import search as S
from .parser import BadCommand, Command, parse_command
from .states import (Authenticated, FolderGone, Logout, NotAuthenticated, Selected, SelectedView,
                     State)

log = logs.get(__name__)

VERSION = "0.1.0"
DELIMITER = "/"
Reply = tuple[str, str, "str | None"]
FLUSH_AT = 256 * 1024
NOT_MUTF7 = "Mailbox name is not valid modified UTF-7"
_CACHE = F.ParsedCache()


class Channel(Protocol):
    """What a session needs from its connection (implemented by :mod:`.server`)."""

    peer: str
    tls_active: bool
    tls_available: bool

    def write(self, data: bytes) -> None: ...
    def pending(self) -> int: ...
    async def flush(self) -> None: ...
    async def read_line(self) -> bytes: ...
    async def start_tls(self) -> None: ...


class Closing(Exception):
    """End the connection after writing what is buffered."""


class Session:
    def __init__(self, ctx: MailstoreContext, channel: Channel) -> None:
        self.ctx = ctx
        self.ch = channel
        self.state: State = NotAuthenticated()
        self.condstore = False
        self.failures = 0
        self.closed = False
        self.client_id: dict | None = None
        self.log = log.bind(peer=channel.peer, protocol="imap")
        ms = ctx.config.mailstore
        self.idle_timeout = float(ms.imap_idle_timeout_seconds)
        self.max_literal = ms.max_literal_bytes

    # -- capabilities ----------------------------------------------------------
    def login_allowed(self) -> bool:
        return plaintext_login_allowed(self.ctx.config.auth, self.ch.peer, self.ch.tls_active)

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "SASL-IR", "LITERAL+", "ID", "ENABLE", "IDLE"]
        if isinstance(self.state, NotAuthenticated):
            if self.ch.tls_available and not self.ch.tls_active:
                caps.append("STARTTLS")
            caps += ["AUTH=PLAIN", "AUTH=LOGIN"] if self.login_allowed() else ["LOGINDISABLED"]
        else:
            caps += ["NAMESPACE", "UIDPLUS", "MOVE", "UNSELECT", "CHILDREN", "SPECIAL-USE", "LIST-EXTENDED",
                     "LIST-STATUS", "QUOTA", "CONDSTORE", "STATUS=SIZE", f"APPENDLIMIT={self.max_literal}"]
        return caps

    def capability_text(self) -> str:
        return " ".join(self.capabilities())

    # -- the loop's entry points -------------------------------------------------
    def greeting(self) -> bytes:
        return R.untagged(f"OK [CAPABILITY {self.capability_text()}] {self.ctx.config.hostname} correo IMAP ready.")

    def bye(self, text: str) -> None:
        self.ch.write(R.untagged(f"BYE {text}"))
        self._leave_selected()
        self.state = Logout()
        self.closed = True

    async def execute(self, buf: bytes) -> None:
        """Run one complete command and write its responses."""
        try:
            cmd = parse_command(buf)
        except BadCommand as exc:
            self.ch.write(R.tagged(exc.tag or "*", "BAD", exc.message, exc.code))
            return
        if not self.state.allows(cmd.name):
            self.ch.write(R.tagged(cmd.tag, "BAD", self._wrong_state(cmd.name)))
            return
        if cmd.invalid_mailbox is not None:
            self._refuse_name(cmd)
            return
        handler = getattr(self, "cmd_" + cmd.name.lower())
        started = time.monotonic()
        try:
            reply = await handler(cmd)
        except Closing:
            return
        except FolderGone:
            self.bye("Selected mailbox was deleted, have to disconnect.")
            return
        except QuotaExceeded:
            reply = ("NO", "Quota exceeded (mailbox for user is full)", "OVERQUOTA")
        except DiskFull:
            reply = ("NO", "Temporary failure: not enough disk space on the server", "UNAVAILABLE")
        except NoSuchFolder:
            reply = ("NO", "Mailbox doesn't exist", "NONEXISTENT")
        except FolderExists:
            reply = ("NO", "Mailbox already exists", "ALREADYEXISTS")
        except (FolderError, StoreError) as exc:
            reply = ("NO", str(exc) or "Operation failed", "CANNOT")
        except (EOFError, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            raise  # the connection is gone or stuck: the server loop ends it
        except Exception:
            self.log.exception("imap_command_failed", command=cmd.name)
            reply = ("NO", "Internal error occurred, the server's log has the details", "SERVERBUG")
        self.ctx.metrics.inc("mailstore_imap_commands_total", command=cmd.name.lower())
        if reply is None:  # the handler answered itself
            return
        if isinstance(self.state, Selected) and not self.closed:
            allow = cmd.uid or cmd.name not in ("FETCH", "STORE", "SEARCH")
            try:
                for line in self.state.view.sync(allow_expunge=allow, condstore=self.condstore):
                    self.ch.write(line)
            except FolderGone:
                self.bye("Selected mailbox was deleted, have to disconnect.")
                return
        status, text, code = reply
        if status == "OK" and cmd.name in ("FETCH", "SEARCH", "STORE", "SELECT", "EXAMINE", "LIST", "STATUS"):
            text = f"{text} ({time.monotonic() - started:.3f} secs)."
        self.ch.write(R.tagged(cmd.tag, status, text, code))

    def _refuse_name(self, cmd: Command) -> None:
        """A mailbox name that is not modified UTF-7: ``NO [CANNOT]`` (RFC
        3501 5.1.3; Dovecot answers the same without UTF8=ACCEPT).  A
        refused SELECT/EXAMINE leaves no folder selected, as any failed
        SELECT does."""
        if cmd.name in ("SELECT", "EXAMINE"):
            self._leave_selected()
        self.log.info("imap_invalid_mailbox_name", command=cmd.name, mailbox=cmd.invalid_mailbox[:100])
        self.ch.write(R.tagged(cmd.tag, "NO", NOT_MUTF7, "CANNOT"))

    def _wrong_state(self, name: str) -> str:
        if isinstance(self.state, NotAuthenticated):
            return f"Command {name} is not valid before login"
        if name in ("STARTTLS", "LOGIN", "AUTHENTICATE"):
            return f"Command {name} is not valid after login"
        return f"Command {name} needs a selected mailbox"

    def _leave_selected(self) -> None:
        if isinstance(self.state, Selected):
            self.state.view.close()
            self.state = Authenticated(self.state.entry, self.state.mailbox)

    def close(self) -> None:
        """The connection ended (any reason): let go of the folder."""
        self._leave_selected()
        self.closed = True

    # -- any state ---------------------------------------------------------------
    async def cmd_capability(self, cmd: Command) -> Reply:
        self.ch.write(R.untagged("CAPABILITY " + self.capability_text()))
        return ("OK", "Capability completed.", None)

    async def cmd_noop(self, cmd: Command) -> Reply:
        return ("OK", "NOOP completed.", None)

    async def cmd_logout(self, cmd: Command) -> Reply:
        self.ch.write(R.untagged("BYE Logging out"))
        self.ch.write(R.tagged(cmd.tag, "OK", "Logout completed."))
        self._leave_selected()
        self.state = Logout()
        self.closed = True
        return None

    async def cmd_id(self, cmd: Command) -> Reply:
        params = cmd.args["params"]
        if params:
            self.client_id = {k: (v.decode("utf-8", "replace") if v is not None else None)
                              for k, v in params.items()}
            self.log.info("imap_client_id", client={k[:30]: (v or "")[:80] for k, v in list(self.client_id.items())[:10]})
        self.ch.write(R.untagged(b"ID (" + b" ".join(R.string(x) for x in (
            "name", "correo", "version", VERSION, "vendor", "correo")) + b")"))
        return ("OK", "ID completed.", None)

    # -- not authenticated ---------------------------------------------------------
    async def cmd_starttls(self, cmd: Command) -> Reply:
        if not self.ch.tls_available or self.ch.tls_active:
            return ("BAD", "TLS is already active" if self.ch.tls_active else "TLS is not available", None)
        self.ch.write(R.tagged(cmd.tag, "OK", "Begin TLS negotiation now."))
        await self.ch.flush()
        await self.ch.start_tls()
        return None

    async def cmd_login(self, cmd: Command) -> Reply:
        if not self.login_allowed():
            return ("NO", "Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
                    "PRIVACYREQUIRED")
        try:
            user = cmd.args["user"].decode("utf-8")
            password = cmd.args["password"].decode("utf-8")
        except UnicodeDecodeError:
            return await self._login_failed("invalid")
        return await self._login(user, password)

    async def cmd_authenticate(self, cmd: Command) -> Reply:
        mech = cmd.args["mechanism"]
        if mech not in ("PLAIN", "LOGIN"):
            return ("NO", "Unsupported authentication mechanism.", None)
        if not self.login_allowed():
            return ("NO", "Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
                    "PRIVACYREQUIRED")
        initial = cmd.args["initial"]
        try:
            if mech == "PLAIN":
                response = initial if initial is not None else await self._challenge(b"")
                if response is None:
                    return ("BAD", "Authentication cancelled.", None)
                _, user, password = decode_sasl_plain(response)
            else:
                import base64
                first = initial if initial is not None else await self._challenge(base64.b64encode(b"Username:"))
                if first is None:
                    return ("BAD", "Authentication cancelled.", None)
                second = await self._challenge(base64.b64encode(b"Password:"))
                if second is None:
                    return ("BAD", "Authentication cancelled.", None)
                user = base64.b64decode(first, validate=True).decode("utf-8")
                password = base64.b64decode(second, validate=True).decode("utf-8")
        except SaslError as exc:
            if str(exc) == "not valid base64":
                return ("BAD", "Invalid base64 data in the SASL response.", None)
            return await self._login_failed("invalid")  # e.g. another authorization identity
        except (ValueError, UnicodeDecodeError):
            return ("BAD", "Invalid base64 data in the SASL response.", None)
        return await self._login(user, password)

    async def _challenge(self, data: bytes) -> bytes | None:
        self.ch.write(R.continuation(data.decode("ascii")) if data else b"+ \r\n")
        await self.ch.flush()
        line = (await self.ch.read_line()).rstrip(b"\r\n")
        if line == b"*":
            return None
        return line

    async def _login(self, user: str, password: str) -> Reply:
        directory = self.ctx.directory.get() if hasattr(self.ctx.directory, "get") else self.ctx.directory
        result = await check_login(directory, self.ctx.throttle, self.ch.peer, user, password)
        if not result.ok:
            return await self._login_failed(result.failure or "invalid", user)
        entry = result.mailbox
        mailbox = await self.ctx.store.mailbox(entry.address)
        self.state = Authenticated(entry, mailbox)
        self.ctx.metrics.inc("mailstore_logins_total", protocol="imap", result="ok")
        self.log = self.log.bind(user=entry.address)
        self.log.info("imap_login", mechanism="plain")
        return ("OK", "Logged in", f"CAPABILITY {self.capability_text()}")

    async def _login_failed(self, why: str, user: str = "") -> Reply:
        self.failures += 1
        self.ctx.metrics.inc("mailstore_logins_total", protocol="imap", result="failed")
        self.log.info("imap_login_failed", user=user[:100], reason=why)
        if self.failures >= self.ctx.config.auth.max_failures_per_session:
            self.ch.write(R.untagged("BYE Too many invalid authentication attempts."))
            self.state = Logout()
            self.closed = True
            raise Closing()
        if why == "suspended":
            return ("NO", "This mailbox is suspended; contact your administrator.", "CONTACTADMIN")
        return ("NO", "Authentication failed.", "AUTHENTICATIONFAILED")

    # -- authenticated -------------------------------------------------------------------
    @property
    def mailbox(self):
        return self.state.mailbox  # type: ignore[attr-defined]

    def _enable_condstore(self) -> None:
        if not self.condstore:
            self.condstore = True
            if isinstance(self.state, Selected):
                self.ch.write(R.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % self.state.view.folder.highestmodseq))

    async def cmd_select(self, cmd: Command) -> Reply:
        return await self._select(cmd, readonly=False)

    async def cmd_examine(self, cmd: Command) -> Reply:
        return await self._select(cmd, readonly=True)

    async def _select(self, cmd: Command, *, readonly: bool) -> Reply:
        self._leave_selected()
        if cmd.args["condstore"]:
            self.condstore = True
        folder = await self.mailbox.folder(cmd.args["mailbox"])
        view = SelectedView(folder, self, readonly=readonly)
        out = view.flags_responses()
        out.append(R.untagged(b"%d EXISTS" % len(view)))
        out.append(R.untagged(b"%d RECENT" % len(view.recent)))
        for seq, uid in enumerate(view.uids, 1):
            msg = folder.get(uid)
            if msg is not None and "\\Seen" not in msg.flags:
                out.append(R.untagged(b"OK [UNSEEN %d] First unseen." % seq))
                break
        out.append(R.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % folder.uidvalidity))
        out.append(R.untagged(b"OK [UIDNEXT %d] Predicted next UID" % folder.uidnext))
        out.append(R.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % folder.highestmodseq))
        for line in out:
            self.ch.write(line)
        self.state = Selected(self.state.entry, self.mailbox, view)  # type: ignore[attr-defined]
        return ("OK", "Select completed", "READ-ONLY" if readonly else "READ-WRITE")

    async def cmd_create(self, cmd: Command) -> Reply:
        name = cmd.args["mailbox"].rstrip(DELIMITER) if cmd.args["mailbox"] != DELIMITER else ""
        if not name:
            return ("NO", "Empty mailbox name", "CANNOT")
        await self.mailbox.create(name)
        return ("OK", "Create completed.", None)

    async def cmd_delete(self, cmd: Command) -> Reply:
        name = cmd.args["mailbox"]
        if name == "INBOX":
            return ("NO", "INBOX can't be deleted.", "CANNOT")
        if isinstance(self.state, Selected) and self.state.view.folder.name == name:
            self._leave_selected()
        await self.mailbox.delete(name)
        return ("OK", "Delete completed.", None)

    async def cmd_rename(self, cmd: Command) -> Reply:
        old, new = cmd.args["old"], cmd.args["new"].rstrip(DELIMITER)
        if not new:
            return ("NO", "Empty mailbox name", "CANNOT")
        if not await self.mailbox.exists(old):
            return ("NO", "Mailbox doesn't exist", "NONEXISTENT")
        await self.mailbox.rename(old, new)
        return ("OK", "Rename completed.", None)

    async def cmd_subscribe(self, cmd: Command) -> Reply:
        await self.mailbox.subscribe(cmd.args["mailbox"], True)
        return ("OK", "Subscribe completed.", None)

    async def cmd_unsubscribe(self, cmd: Command) -> Reply:
        await self.mailbox.subscribe(cmd.args["mailbox"], False)
        return ("OK", "Unsubscribe completed.", None)

    async def cmd_namespace(self, cmd: Command) -> Reply:
        self.ch.write(R.untagged(b'NAMESPACE (("" "/")) NIL NIL'))
        return ("OK", "Namespace completed.", None)

    async def cmd_enable(self, cmd: Command) -> Reply:
        enabled = []
        for cap in cmd.args["capabilities"]:
            if cap == "CONDSTORE" and "CONDSTORE" not in enabled:
                self._enable_condstore()
                enabled.append("CONDSTORE")
        self.ch.write(R.untagged(" ".join(["ENABLED", *enabled])))
        return ("OK", "Enabled.", None)

    # -- LIST / LSUB -----------------------------------------------------------------------
    @staticmethod
    def _pattern(reference: str, pattern: str) -> re.Pattern:
        full = reference + pattern
        if full[:5].upper() == "INBOX" and (len(full) == 5 or full[5] in "/*%"):
            full = "INBOX" + full[5:]
        regex = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in full)
        return re.compile(regex + r"\Z", re.S)

    async def cmd_list(self, cmd: Command) -> Reply:
        args = cmd.args
        patterns = args["patterns"]
        if not args["extended"] and patterns == [""]:
            root = "" if not args["reference"] else args["reference"].split(DELIMITER)[0] + DELIMITER
            self.ch.write(R.untagged(b"LIST (\\Noselect) \"/\" " + R.mailbox(root if root != DELIMITER else "")))
            return ("OK", "List completed", None)
        select, returns = set(args["select"]), set(args["returns"])
        regexes = [self._pattern(args["reference"], p) for p in patterns]
        entries = await self.mailbox.list_folders()
        known = {e.name: e for e in entries}
        subscribed = set(self.mailbox.subscriptions())
        names_with_children = set()
        for e in entries:
            parts = e.name.split(DELIMITER)
            for i in range(1, len(parts)):
                names_with_children.add(DELIMITER.join(parts[:i]))
        show_subscribed = "SUBSCRIBED" in select or "SUBSCRIBED" in returns
        candidates: list[str]
        if "SUBSCRIBED" in select:
            candidates = sorted(subscribed | ({n for n in known} if "RECURSIVEMATCH" in select else set()),
                                key=lambda n: (n != "INBOX", n))
        else:
            candidates = [e.name for e in entries]
        for name in candidates:
            if not any(rx.match(name) for rx in regexes):
                continue
            entry = known.get(name)
            attrs: list[str] = []
            childinfo = False
            if "SUBSCRIBED" in select and name not in subscribed:
                # RECURSIVEMATCH: a parent shown because a child is subscribed
                if not any(s.startswith(name + DELIMITER) for s in subscribed):
                    continue
                childinfo = True
            if entry is None:
                attrs.append("\\NonExistent")
            elif not entry.selectable:
                attrs.append("\\Noselect")
            if entry is not None or "SUBSCRIBED" not in select:
                attrs.append("\\HasChildren" if name in names_with_children else "\\HasNoChildren")
            if show_subscribed and name in subscribed:
                attrs.append("\\Subscribed")
            special = entry.special_use if entry is not None else None
            if "SPECIAL-USE" in select and not special:
                continue
            if special:
                attrs.append(special)
            line = b"LIST (" + " ".join(attrs).encode() + b') "/" ' + R.mailbox(name)
            if childinfo:
                line += b' ("CHILDINFO" ("SUBSCRIBED"))'
            self.ch.write(R.untagged(line))
            if args["status"] and entry is not None and entry.selectable:
                folder = await self.mailbox.folder(name)
                self.ch.write(self._status_line(folder, args["status"]))
            if self.ch.pending() > FLUSH_AT:
                await self.ch.flush()
        return ("OK", "List completed", None)

    async def cmd_lsub(self, cmd: Command) -> Reply:
        rx = self._pattern(cmd.args["reference"], cmd.args["patterns"][0])
        subscribed = set(self.mailbox.subscriptions())
        entries = {e.name: e for e in await self.mailbox.list_folders()}
        shown: dict[str, bool] = {}
        for name in sorted(subscribed, key=lambda n: (n != "INBOX", n)):
            if rx.match(name):
                shown[name] = True
                continue
            parts = name.split(DELIMITER)
            for i in range(len(parts) - 1, 0, -1):  # a '%' pattern shows the subscribed name's parent
                parent = DELIMITER.join(parts[:i])
                if rx.match(parent) and parent not in shown:
                    shown[parent] = parent in subscribed
                    break
        for name, is_sub in shown.items():
            entry = entries.get(name)
            flags = "" if is_sub and entry is not None and entry.selectable else "\\Noselect"
            self.ch.write(R.untagged(b"LSUB (" + flags.encode() + b') "/" ' + R.mailbox(name)))
        return ("OK", "Lsub completed.", None)

    # -- STATUS, APPEND, QUOTA -----------------------------------------------------------------
    def _status_line(self, folder, items: list[str]) -> bytes:
        values = []
        for item in items:
            if item == "MESSAGES":
                v = len(folder)
            elif item == "RECENT":
                v = folder.recent_count()
            elif item == "UIDNEXT":
                v = folder.uidnext
            elif item == "UIDVALIDITY":
                v = folder.uidvalidity
            elif item == "UNSEEN":
                v = folder.unseen()
            elif item == "HIGHESTMODSEQ":
                v = folder.highestmodseq
            else:  # SIZE
                v = folder.usage().bytes
            values.append(b"%s %d" % (item.encode(), v))
        return R.untagged(b"STATUS " + R.mailbox(folder.name) + b" (" + b" ".join(values) + b")")

    async def cmd_status(self, cmd: Command) -> Reply:
        if "HIGHESTMODSEQ" in cmd.args["items"]:
            self._enable_condstore()
        folder = await self.mailbox.folder(cmd.args["mailbox"])
        self.ch.write(self._status_line(folder, cmd.args["items"]))
        return ("OK", "Status completed", None)

    async def cmd_append(self, cmd: Command) -> Reply:
        args = cmd.args
        try:
            folder = await self.mailbox.folder(args["mailbox"])
        except NoSuchFolder:
            return ("NO", "Mailbox doesn't exist", "TRYCREATE")
        message = args["message"]
        if not message:
            return ("NO", "Can't save a zero byte message.", None)
        flags = [f for f in args["flags"] if f.lower() != "\\recent"]
        for f in flags:
            if f == "\\*" or (f.startswith("\\") and f.lower() not in
                              ("\\answered", "\\flagged", "\\deleted", "\\seen", "\\draft")):
                return ("BAD", f"Invalid system flag {f}", None)
        when, tz = args["date"] if args["date"] else (None, None)
        uid = await folder.append(message, flags=flags, internaldate=when, tzoffset=tz)
        return ("OK", "Append completed.", f"APPENDUID {folder.uidvalidity} {uid}")

    def _quota_line(self) -> bytes:
        quota = self.mailbox.quota_bytes
        used = self.mailbox.usage().bytes
        if not quota:
            return R.untagged(b'QUOTA "" ()')
        return R.untagged(b'QUOTA "" (STORAGE %d %d)' % ((used + 1023) // 1024, quota // 1024))

    async def cmd_getquotaroot(self, cmd: Command) -> Reply:
        name = cmd.args["mailbox"]
        if not await self.mailbox.exists(name):
            return ("NO", "Mailbox doesn't exist", "NONEXISTENT")
        self.ch.write(R.untagged(b"QUOTAROOT " + R.mailbox(name) + b' ""'))
        self.ch.write(self._quota_line())
        return ("OK", "Getquotaroot completed.", None)

    async def cmd_getquota(self, cmd: Command) -> Reply:
        if cmd.args["root"] != "":
            return ("NO", "Quota root doesn't exist.", "NONEXISTENT")
        self.ch.write(self._quota_line())
        return ("OK", "Getquota completed.", None)

    async def cmd_setquota(self, cmd: Command) -> Reply:
        return ("NO", "Quotas are set by the administrator.", "NOPERM")

    # -- IDLE ------------------------------------------------------------------------------------
    async def cmd_idle(self, cmd: Command) -> Reply:
        self.ch.write(R.continuation("idling"))
        await self.ch.flush()
        reader = asyncio.ensure_future(self.ch.read_line())
        deadline = time.monotonic() + self.idle_timeout
        try:
            while True:
                view = self.state.view if isinstance(self.state, Selected) else None
                if view is not None:
                    for line in view.sync(allow_expunge=True, condstore=self.condstore):
                        self.ch.write(line)
                    if self.ch.pending():
                        await self.ch.flush()
                waits = [reader]
                watch = None
                if view is not None:
                    watch = asyncio.ensure_future(view.watcher.wait())
                    waits.append(watch)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise asyncio.TimeoutError
                done, _ = await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if watch is not None and not watch.done():
                    watch.cancel()
                if reader in done:
                    try:
                        line = reader.result().rstrip(b"\r\n")
                    except (EOFError, ConnectionError):
                        raise
                    except Exception:  # an over-long line
                        return ("BAD", "Expected DONE.", None)
                    if line.upper() == b"DONE":
                        return ("OK", "Idle completed.", None)
                    return ("BAD", "Expected DONE.", None)
                if not done:
                    raise asyncio.TimeoutError
        except asyncio.TimeoutError:
            reader.cancel()
            self.bye("Disconnected for inactivity.")
            raise Closing() from None
        finally:
            if not reader.done():
                reader.cancel()

    # -- selected --------------------------------------------------------------------------------
    @property
    def view(self) -> SelectedView:
        return self.state.view  # type: ignore[attr-defined]

    def _resolve(self, cmd: Command) -> list[int]:
        try:
            return self.view.resolve(cmd.args["set"], cmd.uid)
        except ValueError:
            raise BadSet() from None

    async def cmd_check(self, cmd: Command) -> Reply:
        return ("OK", "Check completed.", None)

    async def cmd_close(self, cmd: Command) -> Reply:
        view = self.view
        if not view.readonly:
            doomed = [u for u in view.uids if (m := view.folder.get(u)) is not None and "\\Deleted" in m.flags]
            if doomed:
                await view.folder.expunge(doomed, origin=self)
        self._leave_selected()
        return ("OK", "Close completed.", None)

    async def cmd_unselect(self, cmd: Command) -> Reply:
        self._leave_selected()
        return ("OK", "Unselect completed.", None)

    async def cmd_expunge(self, cmd: Command) -> Reply:
        view = self.view
        if view.readonly:
            return ("NO", "Mailbox is read-only.", "READ-ONLY")
        candidates = view.uids
        if cmd.uid:
            candidates = cmd.args["set"].select_uids(view.uids)
        doomed = [u for u in candidates if (m := view.folder.get(u)) is not None and "\\Deleted" in m.flags]
        gone = await view.folder.expunge(doomed, origin=self) if doomed else []
        for line in view.remove(gone):
            self.ch.write(line)
        code = f"HIGHESTMODSEQ {view.folder.highestmodseq}" if self.condstore else None
        return ("OK", "Expunge completed.", code)

    async def _load(self, folder, msg) -> F.Loaded:
        key = (str(folder.mailbox.root), folder.name, folder.uidvalidity, msg.uid)
        cached = _CACHE.get(key)
        if cached is not None:
            data, entity = cached
            return F.Loaded(data, entity, on_parse=lambda e: _CACHE.put(key, data, e))
        data = await folder.read(msg.uid)
        loaded = F.Loaded(data, None, on_parse=lambda e: _CACHE.put(key, data, e))
        _CACHE.put(key, data, None)
        return loaded

    async def cmd_fetch(self, cmd: Command) -> Reply:
        try:
            uids = self._resolve(cmd)
        except BadSet:
            return ("BAD", "Error in IMAP command FETCH: Invalid messageset", None)
        atts = cmd.args["atts"]
        changedsince = cmd.args["changedsince"]
        if changedsince is not None or any(a.name == "MODSEQ" for a in atts):
            self._enable_condstore()
        view = self.view
        folder = view.folder
        marked: set[int] = set()
        if F.sets_seen(atts) and not view.readonly:
            unseen = [u for u in uids if (m := folder.get(u)) is not None and "\\Seen" not in m.flags
                      and u not in view.pending_expunge]
            if unseen:
                changed, _ = await folder.store(unseen, ["\\Seen"], "add", origin=self)
                marked = {m.uid for m in changed}
        want_data = F.needs_data(atts)
        wants_flags = any(a.name == "FLAGS" for a in atts)
        extra_first = ["UID"] if cmd.uid else []
        gone = False
        for uid in uids:
            msg = folder.get(uid)
            if msg is None:
                gone = True
                continue
            if changedsince is not None and msg.modseq <= changedsince:
                continue
            seq = view.seq_of(uid)
            loaded = None
            if want_data:
                try:
                    loaded = await self._load(folder, msg)
                except MessageGone:
                    gone = True
                    continue
            extra_last = []
            if uid in marked:
                extra_last.append("FLAGS")
            if self.condstore and (wants_flags or uid in marked or changedsince is not None):
                extra_last.append("MODSEQ")
            data = F.render(msg, atts, loaded, recent=uid in view.recent, extra_first=extra_first,
                            extra_last=extra_last)
            self.ch.write(b"* %d FETCH " % seq + data + b"\r\n")
            if self.ch.pending() > FLUSH_AT:
                await self.ch.flush()
        if gone:
            return ("NO", "Some of the requested messages no longer exist.", "EXPUNGEISSUED")
        return ("OK", "Fetch completed", None)

    async def cmd_store(self, cmd: Command) -> Reply:
        view = self.view
        if view.readonly:
            return ("NO", "Mailbox is read-only.", "READ-ONLY")
        try:
            uids = self._resolve(cmd)
        except BadSet:
            return ("BAD", "Error in IMAP command STORE: Invalid messageset", None)
        args = cmd.args
        if args["unchangedsince"] is not None:
            self._enable_condstore()
        live = [u for u in uids if u not in view.pending_expunge]
        folder = view.folder
        changed, failed = await folder.store(live, args["flags"], args["mode"],
                                             unchanged_since=args["unchangedsince"], origin=self)
        keywords = folder.keywords()
        if not keywords <= view.keywords:
            view.keywords |= keywords
            for line in view.flags_responses():
                self.ch.write(line)
        changed_uids = {m.uid for m in changed}
        failed_set = set(failed)
        for uid in live:
            msg = folder.get(uid)
            if msg is None or uid in failed_set:
                continue
            seq = view.seq_of(uid)
            items = []
            if cmd.uid:
                items.append(b"UID %d" % uid)
            if not args["silent"]:
                flags = msg.flags | {"\\Recent"} if uid in view.recent else msg.flags
                items.append(b"FLAGS " + R.flag_list(flags))
            elif not (self.condstore and uid in changed_uids):
                continue
            if self.condstore:
                items.append(b"MODSEQ (%d)" % msg.modseq)
            self.ch.write(b"* %d FETCH (" % seq + b" ".join(items) + b")\r\n")
        if failed:
            numbers = failed if cmd.uid else [view.seq_of(u) for u in failed]
            return ("OK", "Conditional STORE failed", "MODIFIED " + R.number_set(n for n in numbers if n).decode())
        return ("OK", "Store completed", None)

    async def cmd_copy(self, cmd: Command) -> Reply:
        return await self._copy_or_move(cmd, move=False)

    async def cmd_move(self, cmd: Command) -> Reply:
        return await self._copy_or_move(cmd, move=True)

    async def _copy_or_move(self, cmd: Command, *, move: bool) -> Reply:
        view = self.view
        if move and view.readonly:
            return ("NO", "Mailbox is read-only.", "READ-ONLY")
        try:
            uids = self._resolve(cmd)
        except BadSet:
            return ("BAD", f"Error in IMAP command {cmd.name}: Invalid messageset", None)
        try:
            dest = await self.mailbox.folder(cmd.args["mailbox"])
        except NoSuchFolder:
            return ("NO", "Mailbox doesn't exist", "TRYCREATE")
        folder = view.folder
        live = [u for u in uids if folder.get(u) is not None and u not in view.pending_expunge]
        gone = len(live) < len(uids)
        if move and dest is folder:
            return ("NO", "Source and destination mailboxes are the same.", "CANNOT")
        if not move:
            pairs = await folder.copy(live, dest)
            if gone and not pairs and uids:
                return ("NO", "Some of the requested messages no longer exist.", "EXPUNGEISSUED")
            code = self._copyuid(dest, pairs)
            return ("OK", "Copy completed.", code)
        pairs = await folder.move(live, dest, origin=self)
        code = self._copyuid(dest, pairs)
        if code:
            self.ch.write(R.untagged(f"OK [{code}] Moved UIDs."))
        for line in view.remove([src for src, _ in pairs]):
            self.ch.write(line)
        return ("OK", "Move completed.", None)

    @staticmethod
    def _copyuid(dest, pairs: list[tuple[int, int]]) -> str | None:
        if not pairs:
            return None
        src = R.number_set(p[0] for p in pairs).decode()
        dst = R.number_set(p[1] for p in pairs).decode()
        return f"COPYUID {dest.uidvalidity} {src} {dst}"

    async def cmd_search(self, cmd: Command) -> Reply:
        charset = cmd.args["charset"]
        if not S.charset_supported(charset):
            return ("NO", "Unsupported charset.", "BADCHARSET (US-ASCII UTF-8)")
        tree = cmd.args["keys"]
        modseq = S.uses_modseq(tree)
        if modseq:
            self._enable_condstore()
        view = self.view
        folder = view.folder
        content = S.needs_content(tree)
        found: list[int] = []
        highest = 0
        largest_uid = view.uids[-1] if view.uids else 0
        for seq, uid in enumerate(list(view.uids), 1):
            msg = folder.get(uid)
            if msg is None:
                continue
            cand = S.Candidate(msg, seq, uid in view.recent, len(view.uids), largest_uid)
            if content:
                try:
                    cand.data = (await self._load(folder, msg)).data
                except MessageGone:
                    continue
            if S.matches(tree, cand):
                found.append(uid if cmd.uid else seq)
                highest = max(highest, msg.modseq)
        line = b"SEARCH" + b"".join(b" %d" % n for n in found)
        if modseq and found:
            line += b" (MODSEQ %d)" % highest
        self.ch.write(R.untagged(line))
        return ("OK", "Search completed", None)


class BadSet(Exception):
    pass
