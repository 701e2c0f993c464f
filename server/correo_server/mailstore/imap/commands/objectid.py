"""OBJECTID (RFC 8474): identifiers that outlive names and locations.

- **MAILBOXID** of a folder: made once (``F`` and 24 random hex digits)
  and kept in the folder's index (``ext.mailboxid``), so it follows the
  folder through RENAME and is new for a folder deleted and created again
  (and for the new folder that RENAME INBOX makes).  Said by CREATE
  (``OK [MAILBOXID (F...)]``), SELECT/EXAMINE (``* OK [MAILBOXID (F...)]``)
  and the STATUS item MAILBOXID.
- **EMAILID** of a message: a digest of its bytes (``M`` + 24 hex digits) —
  the same for every copy of it, unchanged by MOVE, and the same should the
  index ever be rebuilt.
- **THREADID**: a digest of the thread's first Message-ID (``T`` + 24 hex
  digits; see :func:`..summary.thread_id`), shared by a message and its
  replies, in every folder.

EMAILID and THREADID are FETCH items and SEARCH keys (``SEARCH EMAILID
M...``); they come from the folder's summaries (:mod:`..summaries`), kept in
the index like everything SORT and THREAD use.
"""
from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from .. import fetch as F
from .. import responses as R
from .. import search as S
from ..reader import Reader
from ..summaries import SUMMARIES
from .base import Registry, StatusItem

if TYPE_CHECKING:
    from ..backend import Folder
    from ..session import Session

_ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _new_mailboxid() -> str:
    return "F" + secrets.token_hex(12)


async def mailbox_id(folder: "Folder") -> str:
    value = await folder.ext_meta("mailboxid", _new_mailboxid)
    assert value is not None
    return value


async def _select_code(s: "Session", view: Any) -> list[bytes]:
    return [R.untagged(b"OK [MAILBOXID (%s)] Ok" % (await mailbox_id(view.folder)).encode())]


async def _create_code(s: "Session", folder: "Folder") -> str:
    return f"MAILBOXID ({await mailbox_id(folder)})"


async def _status_value(s: "Session", folder: "Folder") -> bytes:
    return b"(" + (await mailbox_id(folder)).encode() + b")"


class _Ids(F.FetchItem):
    """EMAILID or THREADID: from the folder's summaries, loaded for all the
    messages at once."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.summaries: dict = {}

    async def preload(self, session: "Session", uids: list[int]) -> None:
        self.summaries = await SUMMARIES.get(session.backend.cache_key(session.mailbox), session.view.folder, uids)

    def render(self, f: F.Fetched) -> bytes:
        summary = self.summaries.get(f.msg.uid)
        value = None
        if summary is not None:
            value = summary.emailid if self.key == "EMAILID" else summary.threadid
        return self.key.encode() + b" " + (b"(" + value.encode() + b")" if value else R.NIL)


class IdKey(S.Key):
    """SEARCH EMAILID id / THREADID id."""

    needs_summary = True

    def __init__(self, what: str, value: str) -> None:
        self.what, self.value = what, value

    def matches(self, c: S.Candidate) -> bool:
        summary = c.summary
        if summary is None:
            return False
        return (summary.emailid if self.what == "EMAILID" else summary.threadid) == self.value


def _search_key(r: Reader, name: str, sub: Any) -> S.Key:
    r.sp(f"{name} needs an object id")
    value = r.atom("an object id")
    if not set(value) <= _ID_CHARS:
        r.fail(f"Invalid object id {value[:40]}")
    return IdKey(name, value)


def register(registry: Registry) -> None:
    registry.capability("OBJECTID")
    registry.select_responses.append(_select_code)
    registry.create_codes.append(_create_code)
    registry.status_item(StatusItem("MAILBOXID", fetch=_status_value))
    for name in ("EMAILID", "THREADID"):
        registry.fetch_item(name, lambda r, n: _Ids(n))
        registry.search_key(name, _search_key)
