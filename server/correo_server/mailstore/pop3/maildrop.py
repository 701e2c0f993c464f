"""The maildrop a POP3 session works on: a numbered snapshot of the INBOX.

Pure: no I/O.  At login :mod:`.server` asks the store for the INBOX's messages
(UID and size) and builds a :class:`Maildrop`; ``DELE`` only marks, ``RSET``
unmarks, and ``QUIT`` (the UPDATE state) hands :meth:`Maildrop.deleted_uids`
to the store to expunge.  Message numbers stay fixed for the whole session
(RFC 1939 section 5); mail arriving meanwhile shows up at the next login.

Unique-ids (``UIDL``) are derived from the store's UIDVALIDITY and UID, the
very numbers IMAP shows, in Dovecot's default format (``%08Xu%08Xv``: UID then
UIDVALIDITY, eight upper-case hex digits each).  So they are stable across
sessions and restarts, consistent with IMAP, and a mailbox migrated from
Dovecot keeps the ids its clients have seen.
"""
from __future__ import annotations

from dataclasses import dataclass


def uidl(uidvalidity: int, uid: int) -> str:
    """The POP3 unique-id of a message (RFC 1939: 1 to 70 characters 0x21-0x7E)."""
    return f"{uid:08X}{uidvalidity:08X}"


@dataclass(frozen=True)
class Pop3Message:
    uid: int
    size: int  # octets as RETR sends them, before dot-stuffing
    unique_id: str


class NoSuchMessage(LookupError):
    """A message number out of range, or of a message marked deleted."""


class Maildrop:
    def __init__(self, uidvalidity: int, messages: list[tuple[int, int]]) -> None:
        """``messages``: (uid, size) in UID order, as the store lists the INBOX."""
        self.uidvalidity = uidvalidity
        self.messages = [Pop3Message(uid, size, uidl(uidvalidity, uid))
                         for uid, size in sorted(messages)]
        self._deleted: set[int] = set()  # message numbers

    def __len__(self) -> int:
        return len(self.messages)

    def get(self, number: int) -> Pop3Message:
        if not 1 <= number <= len(self.messages):
            raise NoSuchMessage(f"no such message, only {len(self.messages)} messages in maildrop")
        if number in self._deleted:
            raise NoSuchMessage("message already deleted")
        return self.messages[number - 1]

    def live(self) -> list[tuple[int, Pop3Message]]:
        """(number, message) of every message not marked deleted."""
        return [(n, m) for n, m in enumerate(self.messages, 1) if n not in self._deleted]

    def stat(self) -> tuple[int, int]:
        """(count, octets) of the messages not marked deleted."""
        live = self.live()
        return len(live), sum(m.size for _, m in live)

    def delete(self, number: int) -> Pop3Message:
        message = self.get(number)
        self._deleted.add(number)
        return message

    def reset(self) -> None:
        self._deleted.clear()

    def deleted_uids(self) -> list[int]:
        return sorted(self.messages[n - 1].uid for n in self._deleted)

    # -- reply lines ----------------------------------------------------------
    def scan_listing(self, number: int | None = None) -> list[str]:
        """``LIST`` lines: "n size" for one message or for all live ones."""
        if number is not None:
            return [f"{number} {self.get(number).size}"]
        return [f"{n} {m.size}" for n, m in self.live()]

    def uid_listing(self, number: int | None = None) -> list[str]:
        """``UIDL`` lines: "n unique-id"."""
        if number is not None:
            return [f"{number} {self.get(number).unique_id}"]
        return [f"{n} {m.unique_id}" for n, m in self.live()]
