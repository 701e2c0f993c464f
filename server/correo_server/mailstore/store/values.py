"""The values the store hands out (frozen: a session keeps them as a
snapshot) and the default layout of a new mailbox."""
from __future__ import annotations

import time
from dataclasses import dataclass

SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk"}
DEFAULT_FOLDERS = ("Sent", "Drafts", "Trash", "Junk")


@dataclass(frozen=True)
class Usage:
    messages: int = 0
    bytes: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.messages + other.messages, self.bytes + other.bytes)


@dataclass(frozen=True)
class MessageInfo:
    uid: int
    size: int  # RFC822.SIZE: the exact bytes BODY[] returns
    internaldate: float  # epoch seconds
    tzoffset: int  # minutes east of UTC, for INTERNALDATE's zone
    flags: frozenset[str]  # system flags (\\Seen ...) and keywords; never \\Recent
    modseq: int
    path: str  # relative to the folder: new/<base> or cur/<base>:2,<letters>
    base: str
    lf: bool = False  # stored with bare LF line ends (taken over from Dovecot): served with CRLF


class AlreadyDelivered(int):
    """The UID of a message a delivery with the same key stored before (an
    ``int``, so that it reads as delivered): the delivery was a repeat and
    nothing was stored again (:mod:`correo_server.deliverykeys`)."""


@dataclass(frozen=True)
class FolderEntry:
    """One name in the folder hierarchy as LIST shows it."""

    name: str
    selectable: bool  # False: only implied by a child (\\Noselect)
    special_use: str | None = None


def local_offset_minutes(ts: float) -> int:
    """The local zone's offset at ``ts``, in minutes east of UTC."""
    return (time.localtime(ts).tm_gmtoff or 0) // 60
