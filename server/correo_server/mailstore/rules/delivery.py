"""Final delivery with mail rules: run them, carry out what they decide.

:mod:`..lmtp` hands a recipient here (:meth:`DeliveryRules.deliver`) instead
of storing it in INBOX when :meth:`DeliveryRules.wanted` says the mailbox
has rules (an administrator's script, a user's active script, an
auto-reply) or the address carries a subaddress.  Everything else keeps
LMTP's group-commit path untouched.

One delivery, under the mailbox's rules lock (deliveries to one mailbox run
their rules one at a time, so the vacation and ``duplicate`` records are
read and written in order):

1. **decide**, on a worker thread: the scripts (:mod:`.scripts`), the
   Sieve context (the clock, the mailbox's addresses, the domain's
   subaddress delimiter, its tracking state on the mailstore volume
   ``<dataDir>/<mailbox>/correo-sieve/tracking.json``, ``include`` over its
   scripts, ``mailboxexists`` over its folders, ``spamtest`` over the
   relay's scan, :mod:`.verdict`), the chain
   (:mod:`.chain`: admin, user, then the auto-reply), and where each copy
   goes: a keep of mail the relay marked as junk (``X-Spam-Flag: YES``:
   rspamd's ``add header``, DMARC ``quarantine``; :mod:`..junk`) into the
   ``Junk`` folder (made again if its owner deleted it), else a keep into the
   subaddress's folder when one exists (``ana+news@`` → ``news``, matched
   without regard to case; never Sent or Drafts), else INBOX; ``fileinto`` into its folder (created with ``:create``; a folder
   that does not exist is INBOX instead, logged and counted);
2. **send what must go out for the delivery to count**: redirects (the
   message with a ``Received:`` on top, the envelope sender kept) and a
   reject's notice (RFC 5429 MDN), through the queue (:mod:`.submit`).  If
   the queue cannot take them, the recipient gets ``451 4.3.0`` and nothing
   is stored: the queue tries the whole delivery again later;
3. **store** each copy (quota and free space checked by the store, each
   fsynced): the first UID is what LMTP reports; a store that fails ends the
   delivery with that failure (LMTP maps it: 452/552...);
4. **reply**: vacation replies and the auto-reply go to the queue; one that
   cannot be queued is logged and counted, and not recorded as sent (the
   next message may try again); one queued is recorded so that the sender
   gets no second reply within the period;
5. record the ``duplicate`` entries, count the actions;
6. record the delivery's idempotency keys in INBOX's index
   (:mod:`correo_server.deliverykeys`): the queue repeating this delivery
   after a lost ``250`` gets ``250`` and the rules do not run again.  Unlike
   the group commit into INBOX (key and row in one transaction), a crash
   between step 3 and this record repeats the delivery's effects.

The answer for the recipient: the UID (stored), a ``550 5.7.1`` for a
``reject``/``ereject`` at the protocol level (RFC 5429 2.5; copies the
rules stored anyway stay stored), or ``250`` when the rules kept nothing
(discarded, redirected away, rejected by notice).  A script that fails
keeps the message (implicit keep) and is logged and counted
(:mod:`.report`), never a lost message.

The user's explicit actions win over the junk verdict: a ``fileinto`` goes
where it says, a ``redirect`` leaves (a script can test ``spamtest`` and
decide); only the keep goes to Junk.  Copies stored in Junk are counted
for the mailbox's ``/status`` (``junk``) like LMTP's own.

Redirects keep the original envelope sender here (as Pigeonhole does); the
queue rewrites it with SRS at the mailbox's domain when it leaves for
another domain (:func:`correo_server.srs.forward_sender`; the submission
names the mailbox's domain, :mod:`.submit`), so that SPF passes where it
goes and a bounce finds its way back.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ... import logs
from ...addressing import Resolved
from ...directory import MailboxEntry
from ...sieve import (Context, Discard, Envelope, FileInto, Keep, OutgoingMessage, Redirect, Reject, Vacation)
from ...sieve.message import MessageView
from ...sieve.outgoing import redirect_message, refusal_lines, reject_mdn
from ...sieve.tracking import FileState
from ...wire.replies import Reply
from .. import maildir
from ..junk import JUNK
from .. import store as storemod
from ..managesieve.storage import ACTIVE_FILE, ScriptStorage
from ..store.mailbox import address_dir
from . import report
from .chain import AUTOREPLY, ChainResult, describe, run_chain
from .scripts import Scripts, scripts_for, user_script
from .submit import QueueSubmitter, SubmitFailed
from .verdict import scan_verdict

log = logs.get(__name__)

TRACKING_FILE = "tracking.json"
MAX_REFUSAL_TEXT = 450
# A stranger's subaddress may file mail into any folder but these.
NOT_FOR_SUBADDRESS = frozenset({"sent", "drafts"})


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Plan:
    """What the rules decided, with everything prepared for carrying it out."""

    chain: ChainResult
    scripts: Scripts
    stores: list[tuple[str, tuple[str, ...], bool, bool]] = field(default_factory=list)  # folder, flags, create, fallback
    must_send: list[tuple[str, OutgoingMessage]] = field(default_factory=list)  # (what, message)
    replies: list[Vacation] = field(default_factory=list)
    refusal: Reply | None = None
    notes: list[tuple[str, str]] = field(default_factory=list)  # (kind, message) problems to log and count
    junk: bool = False  # the relay marked the message as junk


def strip_return_path(message: bytes) -> bytes:
    """The message without the ``Return-Path:`` final delivery put on top
    (it belongs to this delivery only, RFC 5321 4.4)."""
    if message[:12].lower() == b"return-path:":
        end = message.find(b"\r\n")
        if end >= 0:
            return message[end + 2:]
    return message


def folder_dir(root: Path, name: str) -> Path:
    return root / maildir.dir_for(name)


def folder_exists(root: Path, name: str) -> bool:
    """Does the folder exist (``mailboxexists``; INBOX always does)."""
    try:
        name = maildir.check_name(name)
    except maildir.BadFolderName:
        return False
    return name == "INBOX" or (folder_dir(root, name) / "cur").is_dir()


def detail_folder(root: Path, detail: str | None) -> str | None:
    """The existing folder a subaddress names: the exact name, else the one
    folder whose name matches regardless of case; never Sent or Drafts."""
    if not detail:
        return None
    try:
        wanted = maildir.check_name(detail)
    except maildir.BadFolderName:
        return None
    candidates: list[str] = []
    if folder_exists(root, wanted):
        candidates = [wanted]
    else:
        try:
            entries = os.listdir(root)
        except FileNotFoundError:
            entries = []
        for entry in entries:
            name = maildir.name_for(entry)
            if name is not None and name.lower() == wanted.lower() and (root / entry / "cur").is_dir():
                candidates.append(name)
    if len(candidates) != 1 or candidates[0].rsplit("/", 1)[-1].lower() in NOT_FOR_SUBADDRESS:
        return None
    return candidates[0]


class DeliveryRules:
    """Mail rules at final delivery (see the module docstring); one per mailstore."""

    def __init__(self, ctx, *, submitter: QueueSubmitter | None = None, global_dir: Path | None = None) -> None:
        self.ctx = ctx
        self.submitter = submitter or QueueSubmitter(ctx.config.mailstore.queue, ctx.config.hostname)
        self.global_dir = global_dir
        self.log = report.RulesLog()
        self._locks: dict[str, asyncio.Lock] = {}
        self._states: dict[str, FileState] = {}
        self._active_files: dict[tuple[str, str], str] = {}  # (data dir, address) → its active-script link
        report.register_metrics(ctx.metrics)

    # -- facts ---------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return Path(self.ctx.store.data_dir)

    def now(self) -> float:
        return (self.ctx.clock or time.time)()

    def root(self, address: str) -> Path:
        return self.data_dir / address_dir(address)

    def storage(self, address: str) -> ScriptStorage:
        return ScriptStorage.for_mailbox(self.data_dir, address)

    def _state(self, address: str) -> FileState:
        key = address.lower()
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = FileState(self.storage(address).root / TRACKING_FILE)
        return state

    def wanted(self, entry: MailboxEntry, rcpt: str) -> bool:
        """Whether delivery to ``rcpt`` (of ``entry``) goes through the rules."""
        if entry.sieve or entry.auto_reply is not None:
            return True
        resolved = self.ctx.directory.get().resolve(rcpt)
        if resolved is not None and resolved.detail:
            return True
        k = (self.ctx.store.data_dir, entry.address)
        path = self._active_files.get(k)
        if path is None:  # the path once per mailbox; whether the file is there, every time
            if len(self._active_files) >= 4096:
                self._active_files.clear()
            path = self._active_files[k] = str(self.storage(entry.address).root / ACTIVE_FILE)
        return os.path.exists(path)

    def user_script_name(self, address: str) -> str | None:
        """The user's active script (for status; blocking)."""
        found = user_script(self.storage(address))
        return found[0] if found else None

    # -- one delivery ---------------------------------------------------------------
    async def deliver(self, sender: str, rcpt: str, entry: MailboxEntry, message: bytes,
                      ident: str | None = None, keys: tuple[str, ...] = (), *,
                      junk: bool = False) -> int | Exception | Reply:
        """Run the rules for one recipient and carry them out: the UID of the
        first stored copy, the store's exception, or a reply (refusal, 250).
        ``keys``: the delivery's idempotency keys (:mod:`correo_server.deliverykeys`);
        a delivery whose key INBOX's index has is a repeat
        (:class:`~..store.AlreadyDelivered`): the rules do not run again.
        ``junk``: the relay marked the message as junk (a keep goes to Junk)."""
        key = entry.address.lower()
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            inbox = None
            if keys:
                inbox = await (await self.ctx.store.mailbox(entry.address)).folder("INBOX")
                known = await inbox.delivered(keys)
                if known:
                    return storemod.AlreadyDelivered(next(iter(known.values())))
            result = await self._deliver_locked(sender, rcpt, entry, message, ident, junk)
            if inbox is not None and (isinstance(result, int) or (isinstance(result, Reply) and result.ok)):
                # after the copies, redirects and replies: a crash before this line repeats them
                await inbox.remember_deliveries(keys, result if isinstance(result, int) else 0)
            return result

    async def _deliver_locked(self, sender: str, rcpt: str, entry: MailboxEntry, message: bytes,
                              ident: str | None, junk: bool = False) -> int | Exception | Reply:
        now = self.now()
        resolved = self.ctx.directory.get().resolve(rcpt)
        try:
            plan = await asyncio.to_thread(self._plan, sender, rcpt, resolved, entry, message, now, junk)
        except Exception as exc:  # noqa: BLE001 - the rules must never lose mail: keep it in INBOX
            log.error("sieve_failed", mailbox=entry.address, rcpt=rcpt, error=repr(exc), queue_id=ident)
            self._error(entry, "delivery", "error", f"the mail rules could not run: {exc}", now)
            try:
                uid = await self.ctx.store.deliver(entry.address, message, folder=JUNK if junk else "INBOX")
                if junk:
                    self.ctx.junk.record(entry.address)
                    self.ctx.metrics.inc("mailstore_junk_deliveries_total")
                return uid
            except Exception as failed:  # noqa: BLE001 - LMTP maps it to its reply
                return failed
        return await self._carry_out(plan, sender, rcpt, entry, message, now, ident)

    def _plan(self, sender: str, rcpt: str, resolved: Resolved | None, entry: MailboxEntry, message: bytes,
              now: float, junk: bool = False) -> Plan:
        cfg = self.ctx.config
        storage = self.storage(entry.address)
        root = self.root(entry.address)
        scripts = scripts_for(entry, storage)
        domain = cfg.domain_for(entry.address.rpartition("@")[2])
        delivered_to = resolved.address if resolved is not None else rcpt
        envelope = Envelope(sender, delivered_to, rcpt if rcpt.lower() != delivered_to.lower() else None)
        view = MessageView(message)
        context = Context(
            mailbox=entry.address, addresses=entry.aliases, now=now, hostname=cfg.hostname,
            recipient_delimiter=domain.recipient_delimiter if domain is not None else "+",
            state=self._state(entry.address), includes=storage.resolver(self.global_dir),
            folder_exists=lambda name: folder_exists(root, name), verdict=scan_verdict(view),
        )
        if scripts.empty:
            chain = ChainResult((Keep(implicit=True),), ())
        else:
            chain = run_chain(list(scripts.steps), scripts.autoreply, view, envelope, context)
        plan = Plan(chain, scripts, junk=junk)
        default = detail_folder(root, resolved.detail if resolved is not None else None) or "INBOX"
        if junk:
            default = JUNK
        default_create = junk and not folder_exists(root, JUNK)
        seen: set[tuple[str, tuple[str, ...]]] = set()
        own = {entry.address.lower(), *(a.lower() for a in entry.aliases)}
        for action in chain.actions:
            if isinstance(action, Keep):
                target = (default, tuple(action.flags or ()), default_create, False)
            elif isinstance(action, FileInto):
                name = action.folder
                exists = folder_exists(root, name)
                if not exists and not action.create:
                    plan.notes.append(("folder", f"fileinto \"{name}\": no such folder; stored in INBOX"))
                target = (name, tuple(action.flags or ()), action.create and not exists, not exists)
            elif isinstance(action, Redirect):
                found = self.ctx.directory.get().recipient(action.address)
                if action.address.lower() in own or (found is not None and found.address == entry.address):
                    # to this very mailbox: a loop; keep it here instead (unless a copy stays anyway)
                    if not action.copy:
                        target = (default, (), default_create, False)
                    else:
                        continue
                else:
                    plan.must_send.append(("redirect", redirect_message(
                        strip_return_path(message), envelope, action, hostname=cfg.hostname, now=now)))
                    continue
            elif isinstance(action, Reject):
                lines = refusal_lines(action)
                if lines is not None:
                    text = _one_line(" ".join(line.removeprefix("5.7.1").strip() for line in lines))
                    plan.refusal = Reply(550, "5.7.1", text[:MAX_REFUSAL_TEXT] or "Message refused")
                else:
                    mdn = reject_mdn(view, envelope, action, mailbox=entry.address, hostname=cfg.hostname, now=now)
                    if mdn is not None:
                        plan.must_send.append(("reject notice", mdn))
                continue
            elif isinstance(action, Vacation):
                plan.replies.append(action)
                continue
            else:  # Discard
                continue
            if (target[0], target[1]) not in seen:
                seen.add((target[0], target[1]))
                plan.stores.append(target)
        return plan

    async def _carry_out(self, plan: Plan, sender: str, rcpt: str, entry: MailboxEntry, message: bytes,
                         now: float, ident: str | None) -> int | Exception | Reply:
        metrics = self.ctx.metrics
        for problem in plan.scripts.problems:
            self._error(entry, problem.name, "compile", f"the script does not compile: {problem.error.human()}",
                        now, role=problem.role)
        for run, error in plan.chain.errors:
            self._error(entry, run.name, error.kind, error.human(), now, role=run.role)
        for kind, text in plan.notes:
            self._error(entry, "delivery", kind, text, now)
        # 2. what must go out for this delivery to count
        for what, outgoing in plan.must_send:
            try:
                queue_id = await self.submitter.submit(outgoing, owner=entry.address.rpartition("@")[2])
            except SubmitFailed as exc:
                log.warning("sieve_submit_failed", mailbox=entry.address, what=what, to=list(outgoing.recipients),
                            reply=str(exc.reply), queue_id=ident)
                self._error(entry, "delivery", "submit", f"could not queue the {what}: {exc.reply}", now)
                return Reply(451, "4.3.0", f"<{rcpt}>: the mail rules' {what} could not be queued, try again later")
            log.info("sieve_sent", mailbox=entry.address, what=what, to=list(outgoing.recipients),
                     queued_as=queue_id or None, queue_id=ident)
        # 3. the copies
        first: int | None = None
        for folder, flags, create, fallback in plan.stores:
            if create:
                try:
                    mbox = await self.ctx.store.mailbox(entry.address)
                    await mbox.create(folder)
                except storemod.FolderExists:
                    pass
                except storemod.StoreError as exc:
                    self._error(entry, "delivery", "folder", f"cannot create folder \"{folder}\": {exc}; "
                                "stored in INBOX", now)
            try:
                uid = await self.ctx.store.deliver(entry.address, message, folder=folder, flags=flags)
            except Exception as exc:  # noqa: BLE001 - LMTP maps quota, disk full and the rest to its reply
                return exc
            if first is None:
                first = uid
            if folder == JUNK and plan.junk:
                self.ctx.junk.record(entry.address)
                metrics.inc("mailstore_junk_deliveries_total")
        # 4. replies, best effort
        for vacation in plan.replies:
            metrics.inc(report.VACATION, result=vacation.reason)
            if vacation.reply is None:
                log.info("vacation_not_sent", mailbox=entry.address, to=vacation.recipient or "<>",
                         reason=vacation.reason, why=vacation.message, queue_id=ident)
                continue
            try:
                queue_id = await self.submitter.submit(vacation.reply)
            except SubmitFailed as exc:
                log.warning("vacation_submit_failed", mailbox=entry.address, to=vacation.recipient,
                            reply=str(exc.reply), queue_id=ident)
                self._error(entry, "delivery", "submit", f"could not queue the reply to {vacation.recipient}: "
                            f"{exc.reply}", now)
                continue
            metrics.inc(report.ACTIONS, action="vacation")
            if vacation.track is not None:
                await asyncio.to_thread(self._state(entry.address).record, [vacation.track], now)
            log.info("vacation_sent", mailbox=entry.address, to=vacation.recipient, queued_as=queue_id or None,
                     queue_id=ident)
        # 5. records and counts
        if plan.chain.state_updates:
            await asyncio.to_thread(self._state(entry.address).record, plan.chain.state_updates, now)
        done = describe(plan.chain.actions)
        for action in done:
            if action != "vacation":  # counted above, when a reply went out
                metrics.inc(report.ACTIONS, action=action)
        if plan.chain.runs:
            log.info("sieve_actions", mailbox=entry.address, rcpt=rcpt, actions=done,
                     scripts=[r.name for r in plan.chain.runs], stored=[s[0] for s in plan.stores],
                     queue_id=ident)
        if plan.refusal is not None:
            return plan.refusal
        if first is not None:
            return first
        what = "discarded" if plan.chain.of(Discard) or not plan.must_send else "passed on"
        return Reply(250, "2.0.0", f"<{rcpt}> delivered ({what} by the mailbox's rules)")

    def _error(self, entry: MailboxEntry, script: str, kind: str, message: str, now: float, *,
               role: str = "delivery") -> None:
        self.ctx.metrics.inc(report.ERRORS, script=role if role != AUTOREPLY else AUTOREPLY, kind=kind)
        self.log.record(entry.address, script, message, now)
        log.warning("sieve_error", mailbox=entry.address, script=script, kind=kind, error=message)
