"""The mailstore's storage API: mailboxes, folders and messages.

Used by LMTP (``deliver``), POP3 and IMAP.  One :class:`Store` per process
serves ``cfg.mailstore.data_dir``; under it each mailbox (one directory entry)
is a Maildir (:mod:`..maildir`) with a SQLite index beside each folder
(:mod:`..index`).  Change notification between sessions is :mod:`..changes`.

Quick reference (everything that touches the disk is ``async`` and runs its
blocking work on the store's own few threads, :meth:`Store.io`)::

    store = Store.from_config(cfg, directory)          # directory: Reloading[Directory] or Directory
    uid = await store.deliver("alice@example.com", data)   # QuotaExceeded / DiskFull
    usage = await store.usage("alice@example.com")     # Usage(messages, bytes), all folders
    store.last_delivery("alice@example.com")           # float | None (epoch seconds)

    mbox = await store.mailbox("alice@example.com")    # created on first use (INBOX, Sent, Drafts, Trash, Junk)
    inbox = await mbox.folder("INBOX")                 # NoSuchFolder
    inbox.uidvalidity, inbox.uidnext, inbox.highestmodseq
    for msg in inbox.messages():                       # MessageInfo(uid, size, flags, ...), UID order
        data = await inbox.read(msg.uid)               # MessageGone if expunged meanwhile
    await inbox.store([3], ["\\Seen"], "add", origin=session)
    await inbox.expunge([3, 4], origin=session)        # remove these UIDs (POP3 UPDATE state)
    watcher = inbox.watch(session)                     # changes made by others; see ..changes
    mbox.try_lock("pop3", session) / mbox.unlock("pop3", session)

POP3's UIDL derives from ``folder.uidvalidity`` and the UID: stable across
sessions and restarts, and the same UID IMAP shows.

The modules, bottom up:

- :mod:`.errors`, :mod:`.values` — what the store raises and hands out;
- :mod:`.threads` — the worker threads and the store's rule: the in-memory
  view changes only on the event loop;
- :mod:`.disk` — one folder's files and index (worker side);
- :mod:`.uidvalidity`, :mod:`.repair` — opening a folder: UIDVALIDITY,
  Dovecot take-over, a corrupt index rebuilt, the index made to agree with
  the files;
- :mod:`.quota` — usage per folder and the quota / free-space decision;
- :mod:`.folder` — one folder's view and its writes;
- :mod:`.mailbox` — one mailbox: folders, hierarchy, subscriptions, locks;
- :mod:`.datadir` — the :class:`Store`: mailboxes, threads, open-file bound.

Consistency: every write to one mailbox (any folder) runs under that
mailbox's lock, so IMAP, POP3 and LMTP sessions on the same mailbox see one
order of events.  Durability: new mail is on disk before it is
acknowledged; the index survives any process crash, and after a power loss
may lose its last flag changes or expunges (Dovecot's default
``mail_fsync=optimized`` makes the same trade).

Migration: a Maildir Dovecot kept is taken over with its UIDs, UIDVALIDITY,
keyword letters and subscriptions (``dovecot-uidlist``, ``dovecot-keywords``,
``subscriptions``) the first time correo indexes it, and messages stored with
bare LF line ends are served with CRLF, as Dovecot serves them.
"""
from __future__ import annotations

from .datadir import DirectorySource, Store
from .errors import DiskFull, FolderError, FolderExists, MailboxMoving, MessageGone, NoSuchFolder, QuotaExceeded, StoreError
from .folder import Folder
from .mailbox import TRASH_DIR, Mailbox
from .uidvalidity import UIDVALIDITY_FILE
from .values import DEFAULT_FOLDERS, SPECIAL_USE, AlreadyDelivered, FolderEntry, MessageInfo, Usage

__all__ = [
    "AlreadyDelivered", "DEFAULT_FOLDERS", "SPECIAL_USE", "TRASH_DIR", "UIDVALIDITY_FILE", "DirectorySource", "DiskFull", "Folder",
    "FolderEntry", "FolderError", "FolderExists", "Mailbox", "MailboxMoving", "MessageGone", "MessageInfo", "NoSuchFolder",
    "QuotaExceeded", "Store", "StoreError", "Usage",
]
