"""The connection states of RFC 3501 section 3, as classes, and the view a
selected session has of its folder.

Each command declares the states it accepts (:mod:`.commands`); a state
class carries its flag, and the session's data for that state, and
:mod:`.session` moves between them (``NotAuthenticated`` → ``Authenticated``
⇄ ``Selected`` → ``Logout``).
:class:`SelectedView` keeps the session's own message-sequence-number map:
numbers only change when this session is told (EXPUNGE/EXISTS responses), so
a change made by another session (LMTP delivery, POP3 deletion, a second IMAP
client) is held back until the protocol lets the server report it, and then
turned into untagged responses by :meth:`SelectedView.sync`.
"""
from __future__ import annotations

import bisect
import enum
from typing import Callable, ClassVar

from . import responses as R
from .backend import Folder, Mailbox
from .reader import SeqSet

class StateFlag(enum.Flag):
    """The states a command declares it accepts (Logout accepts nothing)."""

    NOT_AUTHENTICATED = enum.auto()
    AUTHENTICATED = enum.auto()
    SELECTED = enum.auto()


Flag = StateFlag
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


class State:
    name: ClassVar[str]
    flag: ClassVar[Flag | None]  # what commands declare they accept (None: nothing)


class NotAuthenticated(State):
    name = "not authenticated"
    flag = Flag.NOT_AUTHENTICATED


class Authenticated(State):
    name = "authenticated"
    flag = Flag.AUTHENTICATED

    def __init__(self, address: str, mailbox: Mailbox) -> None:
        self.address = address
        self.mailbox = mailbox


class Selected(Authenticated):
    name = "selected"
    flag = Flag.SELECTED

    def __init__(self, address: str, mailbox: Mailbox, view: "SelectedView") -> None:
        super().__init__(address, mailbox)
        self.view = view


class Logout(State):
    name = "logout"
    flag = None


class FolderGone(Exception):
    """The selected folder was deleted by another session."""


class SelectedView:
    def __init__(self, folder: Folder, owner: object, *, readonly: bool) -> None:
        self.folder = folder
        self.readonly = readonly
        self.watcher = folder.watch(owner)
        self.uids: list[int] = folder.uids()
        self.highest_uid = self.uids[-1] if self.uids else 0
        if readonly:
            self.recent = folder.recent_uids()
        else:
            self.recent = folder.take_recent()
        self.pending_expunge: set[int] = set()
        self.keywords: set[str] = folder.keywords()
        self.saved: frozenset[int] = frozenset()  # UIDs of the result a SEARCH saved ("$", RFC 5182)
        self.vanished = False  # expunges are reported as VANISHED uid-set (QRESYNC, RFC 7162 3.2.10)
        self.report_recent = True  # RECENT responses (IMAP4rev2 has none)
        self.uidonly = False  # FETCH responses name UIDs, not numbers (UIDONLY, RFC 9586)
        # called with the UIDs about to be expunged, while their numbers still hold; lines to send
        # first (CONTEXT=SEARCH's REMOVEFROM)
        self.on_remove: list[Callable[["SelectedView", list[int]], list[bytes]]] = []

    # -- numbers ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def resolve(self, seqset: SeqSet, uid: bool) -> list[int]:
        """UIDs (ascending) a sequence set names; ValueError for a message
        sequence number beyond the last message.  ``$`` (SEARCHRES) is the
        saved result, less the messages expunged since."""
        if seqset.saved:
            return sorted(u for u in self.saved if self.seq_of(u) is not None)
        if uid:
            return seqset.select_uids(self.uids)
        return [self.uids[s - 1] for s in seqset.seqs(len(self.uids))]

    # -- responses -------------------------------------------------------------
    def fetch_head(self, uid: int, *, with_uid: bool) -> bytes:
        """How a FETCH response about a message starts: ``* 3 FETCH (UID 17 ``
        (``UID 17`` when ``with_uid``), or under UIDONLY ``* 17 UIDFETCH (``."""
        if self.uidonly:
            return b"* %d UIDFETCH (" % uid
        seq = self.seq_of(uid) or 0
        return b"* %d FETCH (UID %d " % (seq, uid) if with_uid else b"* %d FETCH (" % seq

    def flags_responses(self) -> list[bytes]:
        kws = sorted(self.keywords)
        flags = R.flag_list([*SYSTEM_FLAGS, *kws])
        out = [R.untagged(b"FLAGS " + flags)]
        if self.readonly:
            out.append(R.untagged(b"OK [PERMANENTFLAGS ()] Read-only mailbox."))
        else:
            perm = R.flag_list([*SYSTEM_FLAGS, *kws]).rstrip(b")") + b" \\*)"
            out.append(R.untagged(b"OK [PERMANENTFLAGS " + perm + b"] Flags permitted."))
        return out

    def remove(self, uids: list[int]) -> list[bytes]:
        """This session's own expunge: EXPUNGE responses (highest number first,
        so that each number is still right when the client reads it), or
        one ``VANISHED`` response with the UIDs (:attr:`vanished`)."""
        out = []
        for hook in self.on_remove:
            out += hook(self, [u for u in uids if self.seq_of(u) is not None])
        first = len(out)
        gone = []
        for uid in sorted(uids, reverse=True):
            seq = self.seq_of(uid)
            if seq is None:
                continue
            del self.uids[seq - 1]
            self.recent.discard(uid)
            self.pending_expunge.discard(uid)
            gone.append(uid)
            out.append(R.untagged(b"%d EXPUNGE" % seq))
        if self.vanished and gone:
            return out[:first] + [R.untagged(b"VANISHED " + R.number_set(gone))]
        return out

    def sync(self, *, allow_expunge: bool, condstore: bool) -> list[bytes]:
        """Untagged responses for what others changed since the last sync.
        Raises :class:`FolderGone` when the folder was deleted."""
        pending = self.watcher.take()
        if pending.deleted or self.folder.deleted:
            raise FolderGone()
        self.pending_expunge |= {u for u in pending.expunged if self.seq_of(u) is not None}
        out: list[bytes] = []
        if allow_expunge and self.pending_expunge:
            out += self.remove(sorted(self.pending_expunge))
            self.pending_expunge.clear()
        if pending.appended or self.folder.uidnext - 1 > self.highest_uid:
            new = [u for u in self.folder.uids() if u > self.highest_uid]
            if new:
                self.uids.extend(new)
                self.highest_uid = new[-1]
                if not self.readonly and self.report_recent:
                    self.recent |= self.folder.take_recent() & set(new)
                keywords = self.folder.keywords()
                if not keywords <= self.keywords:
                    self.keywords |= keywords
                    out += self.flags_responses()
                out.append(R.untagged(b"%d EXISTS" % len(self.uids)))
                if self.report_recent:
                    out.append(R.untagged(b"%d RECENT" % len(self.recent)))
        for uid in sorted(pending.flags):
            seq = self.seq_of(uid)
            msg = self.folder.get(uid)
            if seq is None or msg is None or uid in self.pending_expunge:
                continue
            keywords = {f for f in msg.flags if not f.startswith("\\")}
            if not keywords <= self.keywords:
                self.keywords |= keywords
                out += self.flags_responses()
            flags = msg.flags | {"\\Recent"} if uid in self.recent else msg.flags
            item = self.fetch_head(uid, with_uid=True) + b"FLAGS " + R.flag_list(flags)
            if condstore:
                item += b" MODSEQ (%d)" % msg.modseq
            out.append(item + b")\r\n")
        return out

    def close(self) -> None:
        self.watcher.close()
