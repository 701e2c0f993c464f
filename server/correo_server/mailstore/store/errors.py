"""The store's errors.  ``str()`` of each is a message fit for a client;
the protocols map them to their replies (LMTP codes, IMAP response codes,
POP3 ``-ERR``)."""
from __future__ import annotations


class StoreError(Exception):
    """Base of the store's errors."""


class QuotaExceeded(StoreError):
    """The message would take the mailbox over its quota (LMTP 552 5.2.2 /
    452 4.2.2, IMAP ``NO [OVERQUOTA]``)."""

    def __init__(self, usage: int, quota: int, size: int) -> None:
        super().__init__(f"mailbox over quota ({usage} + {size} bytes > {quota})")
        self.usage, self.quota, self.size = usage, quota, size


class DiskFull(StoreError):
    """No room on the volume (LMTP 452 4.3.1, IMAP ``NO [UNAVAILABLE]``: a
    temporary failure)."""


class NoSuchFolder(StoreError):
    pass


class MailboxMoving(StoreError):
    """The mailbox is being moved to another mailstore shard
    (:mod:`..transfer`): nothing is written here any more (LMTP ``451
    4.2.0``, the queue retries; its sessions are closed)."""


class FolderExists(StoreError):
    pass


class FolderError(StoreError):
    """A folder operation that cannot be done (bad name, INBOX deletion...)."""


class MessageGone(StoreError):
    """The message was expunged (by another session) before it could be read."""


def disk_error(exc: OSError) -> Exception:
    """What a failed write becomes: :class:`DiskFull` when the volume is full
    (or the user's disk quota is reached), else the error itself."""
    from ..maildir import is_disk_full
    return DiskFull(f"disk full: {exc.strerror}") if is_disk_full(exc) else exc
