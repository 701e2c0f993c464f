"""CONDSTORE (RFC 7162 section 3.1): modification sequences, in one module.

- ``ENABLE CONDSTORE``, and any of the below, switch it on for the session
  (3.1: "CONDSTORE enabling commands"); when a folder is selected the
  server then says ``OK [HIGHESTMODSEQ n]``.
- ``SELECT/EXAMINE mailbox (CONDSTORE)``; the ``HIGHESTMODSEQ`` STATUS item;
- ``FETCH ... MODSEQ`` and ``FETCH ... (CHANGEDSINCE n)`` (only messages
  changed since n);
- ``STORE ... (UNCHANGEDSINCE n)`` (the conditional store: messages changed
  since are refused in ``[MODIFIED ...]``);
- ``SEARCH MODSEQ n`` (with ``(MODSEQ highest)`` in the reply).

Once on, untagged FETCH responses carrying flags also carry MODSEQ, and
EXPUNGE answers ``[HIGHESTMODSEQ n]`` — the core commands consult
``session.condstore`` for that.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import fetch as F
from .. import responses as R
from .. import search as S
from ..reader import Reader
from ..states import Selected
from .base import Modifier, Registry, StatusItem

if TYPE_CHECKING:
    from ..session import Session

NAME = "CONDSTORE"


def _on_enable(s: "Session") -> None:
    if isinstance(s.state, Selected):
        s.write(R.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % s.state.view.folder.highestmodseq))


def _use(s: "Session", _value: Any = None) -> None:
    s.enable(NAME)


class ModSeqItem(F.ModSeq):
    def prepare(self, session: "Session") -> None:
        _use(session)


def _modseq_key(r: Reader, name: str, sub) -> S.Key:
    r.sp("MODSEQ needs a mod-sequence")
    if r.peek() == b'"':  # entry-name entry-type-req: one mod-sequence serves them all here
        r.quoted()
        r.sp("MODSEQ needs a mod-sequence")
        r.atom("an entry type")
        r.sp("MODSEQ needs a mod-sequence")
    return S.ModSeq(r.number(what="a mod-sequence"))


def register(registry: Registry) -> None:
    registry.capability(NAME)
    registry.enable(NAME, _on_enable)
    registry.select_modifier(Modifier(NAME, on_use=_use))
    registry.status_item(StatusItem("HIGHESTMODSEQ", lambda folder: folder.highestmodseq, on_request=_use))
    registry.fetch_item("MODSEQ", lambda r, n: ModSeqItem())
    registry.fetch_modifier(Modifier("CHANGEDSINCE", parse=lambda r: r.number(nonzero=True, what="a mod-sequence"),
                                     on_use=_use, keep=lambda msg, since: msg.modseq > since))
    registry.store_modifier(Modifier("UNCHANGEDSINCE", parse=lambda r: r.number(what="a mod-sequence"),
                                     on_use=_use))
    registry.search_key("MODSEQ", _modseq_key)
