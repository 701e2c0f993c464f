"""What an IMAP session needs from storage and from the directory: the
interface the commands are written against (as POP3's
:class:`~..pop3.states.Backend` is).  :mod:`.storebackend` implements it over
the mailstore's store and the directory; nothing else in this package
imports the store.

The values and errors are the store's own leaf types (re-exported here as
part of the contract): a backend raises :class:`NoSuchFolder`,
:class:`FolderExists`, :class:`FolderError`, :class:`QuotaExceeded`,
:class:`DiskFull` or :class:`MessageGone` (all :class:`StoreError`), and the
session turns them into ``NO`` with RFC 5530 response codes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

from ..changes import Watcher
from ..store.errors import DiskFull, FolderError, FolderExists, MessageGone, NoSuchFolder, QuotaExceeded, StoreError
from ..store.values import FolderEntry, MessageInfo, Usage

__all__ = [
    "Backend", "DiskFull", "Folder", "FolderEntry", "FolderError", "FolderExists", "LoginResult", "Mailbox",
    "MessageGone", "MessageInfo", "NoSuchFolder", "QuotaExceeded", "StoreError", "Usage",
]


class Folder(Protocol):
    """One folder: a view read without I/O, and writes that tell watchers."""

    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    deleted: bool

    def messages(self) -> list[MessageInfo]: ...
    def uids(self) -> list[int]: ...
    def get(self, uid: int) -> MessageInfo | None: ...
    def __len__(self) -> int: ...
    def usage(self) -> Usage: ...
    def unseen(self) -> int: ...
    def recent_count(self) -> int: ...
    def recent_uids(self) -> set[int]: ...
    def take_recent(self) -> set[int]: ...
    def keywords(self) -> set[str]: ...
    def watch(self, owner: object) -> Watcher: ...
    async def read(self, uid: int) -> bytes: ...
    async def map_messages(self, uids: Iterable[int], fn: Callable[[bytes], Any]) -> dict[int, Any]:
        """``fn(content)`` for many messages, off the event loop (gone ones left out)."""
    async def vanished_since(self, modseq: int) -> tuple[list[int], bool]:
        """UIDs expunged after ``modseq``; False when the record began later (QRESYNC)."""
    async def message_data(self, kind: str) -> dict[int, bytes]:
        """Values an extension derived from the messages and kept (UID → bytes)."""
    async def put_message_data(self, kind: str, rows: dict[int, bytes]) -> None: ...
    async def ext_meta(self, key: str, make: Callable[[], str] | None = None) -> str | None:
        """A folder-wide value an extension keeps (MAILBOXID), made by ``make`` once."""
    async def set_ext_meta(self, key: str, value: str | None) -> None: ...
    async def message_data_for(self, kind: str, uids: list[int]) -> dict[int, bytes]:
        """Values of one kind kept for these messages (the ones that have one)."""
    async def append(self, data: bytes, *, flags: Iterable[str] = (), internaldate: float | None = None,
                     tzoffset: int | None = None) -> int: ...
    async def append_all(self, items: list[tuple[bytes, Iterable[str], float | None, int | None]]) -> list[int]:
        """Several messages, all stored or none (MULTIAPPEND)."""
    async def store(self, uids: Iterable[int], flags: Iterable[str], mode: str = "replace", *,
                    unchanged_since: int | None = None, origin: object = None
                    ) -> tuple[list[MessageInfo], list[int]]: ...
    async def expunge(self, uids: Iterable[int], *, origin: object = None) -> list[int]: ...
    async def copy(self, uids: Iterable[int], dest: "Folder") -> list[tuple[int, int]]: ...
    async def move(self, uids: Iterable[int], dest: "Folder", *, origin: object = None
                   ) -> list[tuple[int, int]]: ...


class Mailbox(Protocol):
    """One user's mailbox: folders, hierarchy, subscriptions, quota."""

    address: str

    @property
    def quota_bytes(self) -> int | None: ...
    def usage(self) -> Usage: ...
    def subscriptions(self) -> list[str]: ...
    async def folder(self, name: str) -> Folder: ...
    async def exists(self, name: str) -> bool: ...
    async def list_folders(self) -> list[FolderEntry]: ...
    async def create(self, name: str) -> Folder: ...
    async def delete(self, name: str) -> None: ...
    async def rename(self, old: str, new: str) -> None: ...
    async def subscribe(self, name: str, on: bool = True) -> None: ...


@dataclass(frozen=True)
class LoginResult:
    address: str | None  # the mailbox logged in to; None: refused
    failure: str | None = None  # why not: "invalid", "suspended", ...
    retry_after: float = 0.0  # failures from the address repeat: wait this long (the reply says so)
    detail: str = ""  # for the log only: unknown_user, wrong_password, suspended... (correo_server.login)


class Backend(Protocol):
    def plaintext_allowed(self, peer: str, tls_active: bool) -> bool:
        """May LOGIN / AUTHENTICATE PLAIN be used on this connection?"""
    async def login(self, peer: str, user: str, password: str) -> LoginResult: ...
    async def login_as(self, peer: str, authzid: str, authcid: str, password: str) -> LoginResult:
        """PLAIN with an authorization identity: the proxy's login for a user."""
    async def mailbox(self, address: str) -> Mailbox: ...
    def cache_key(self, mailbox: Mailbox) -> str:
        """A string naming the mailbox's storage (keys of the parsed-message cache)."""
