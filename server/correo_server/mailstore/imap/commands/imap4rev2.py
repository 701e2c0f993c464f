"""IMAP4rev2 (RFC 9051), offered alongside IMAP4rev1: a client that says
``ENABLE IMAP4rev2`` gets rev2's differences for the rest of the session —

- no ``\\Recent`` flag and no ``RECENT`` responses (SELECT, new mail);
- SELECT/EXAMINE also answer ``* LIST () "/" name`` (the name as the server
  knows it);
- every SEARCH is answered in ESEARCH form (``* ESEARCH (TAG ..) ALL ..``);
- mailbox names travel as UTF-8 in both directions (``&`` is just ``&``);
- LIST says ``\\NonExistent`` (which implies ``\\Noselect``) for a name
  that is only the parent of others;
- the STATUS item DELETED (messages with ``\\Deleted``).

The rest of rev2 is rev1 plus extensions that have their own modules and
are always on: ENABLE, IDLE, NAMESPACE, UIDPLUS, UNSELECT, MOVE, ESEARCH,
SEARCHRES, BINARY, LIST-EXTENDED, LIST-STATUS, SPECIAL-USE, CHILDREN,
SASL-IR, LITERAL+, STATUS=SIZE — and OK [CLOSED], which QRESYNC turned on.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import responses as R
from ..states import Selected, SelectedView
from .base import Options, Registry, StatusItem

if TYPE_CHECKING:
    from ..session import Session

NAME = "IMAP4rev2"
KEY = NAME.upper()


def on(s: "Session") -> bool:
    return KEY in s.enabled


def _no_recent(view: SelectedView) -> None:
    view.report_recent = False
    view.recent = set()


def _on_enable(s: "Session") -> None:
    s.utf8_names = True
    if isinstance(s.state, Selected):
        _no_recent(s.state.view)


def _setup(s: "Session", view: SelectedView) -> None:
    if on(s):
        _no_recent(view)


async def _select_list(s: "Session", view: SelectedView) -> list[bytes]:
    if not on(s):
        return []
    return [R.untagged(b'LIST () "/" ' + s.quote_mailbox(view.folder.name))]


def _esearch(s: "Session") -> Options | None:
    return Options({"ALL": True}) if on(s) else None


def _nonexistent(s: "Session", entry: Any, attrs: list[str]) -> list[str]:
    if on(s) and entry is not None and not entry.selectable and "\\Noselect" in attrs:
        return ["\\NonExistent" if a == "\\Noselect" else a for a in attrs]
    return attrs


def _deleted(folder: Any) -> int:
    return sum(1 for m in folder.messages() if "\\Deleted" in m.flags)


def register(registry: Registry) -> None:
    registry.capability(NAME, order=1)  # after login, with the rest: it says nothing about how to log in
    registry.enable(NAME, _on_enable)
    registry.view_setup.append(_setup)
    registry.select_responses.append(_select_list)
    registry.search_default(_esearch)
    registry.list_attributes.append(_nonexistent)
    registry.status_item(StatusItem("DELETED", _deleted))
