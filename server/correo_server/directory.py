"""The mailbox directory: who exists, their password hash, aliases, forwards, quota.

Written by the renderer into the directory Secret as ``directory.yaml`` (format
below, defined here only) and read by every server.  It holds password
*hashes* only.  The servers never restart for a directory change: they hold a
:class:`Reloading` view that re-reads the file when it changes on disk (a
Kubernetes Secret volume swaps a symlink; the local runtime rewrites the file).

``directory.yaml``::

    version: 1
    mailboxes:
    - address: alice@example.com        # canonical address, lower-case domain
      name: alice                       # the Mailbox resource's name
      displayName: Alice Liddell
      passwordHash: '{ARGON2ID}$argon2id$...'   # absent: cannot log in
      quotaBytes: 1073741824
      aliases: [postmaster@example.com]
      forwardTo: [alice@elsewhere.org]
      keepCopy: true
      suspended: false
      sieve: |                          # the admin's Sieve script (Mailbox spec.sieve); absent: none.
        require "fileinto";             # Always one that compiles: when spec.sieve does not, the
        ...                             # renderer keeps the previous valid one here.
      autoReply:                        # present only when enabled (Mailbox spec.autoReply)
        subject: Out of office          # absent: "Auto: <the original subject>"
        body: I am away until Monday.
        htmlBody: <p>I am away ...</p>  # optional
        start: '2025-07-01T00:00:00Z'   # optional RFC 3339 window
        end: '2025-07-15T00:00:00Z'
        intervalDays: 7                 # one reply per sender per interval
        extraAddresses: [ana@old.example]

Addresses in alias domains (``alice@example.net`` when ``example.net`` is an
alias of ``example.com``) resolve through the :class:`~correo_server.config.ServerConfig`;
which mailbox a recipient reaches (subaddresses, catch-all) is
:func:`correo_server.addressing.resolve`, used by :meth:`Directory.resolve`.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

import yaml


from . import addressing, passwords
from .addressing import Resolved
from .config import DIRECTORY_FILE, ConfigError, ServerConfig, _from_dict, to_dict, yaml_dump, yaml_load

FORMAT_VERSION = 1
_MEMO_ENTRIES = 4096  # addresses a snapshot remembers resolving (then it starts afresh)


@dataclass(frozen=True)
class AutoReply:
    """An automatic reply (Mailbox ``spec.autoReply``), turned into a Sieve
    ``vacation`` by :mod:`correo_server.autoreply`."""

    body: str
    subject: str | None = None
    html_body: str | None = None
    start: str | None = None  # RFC 3339
    end: str | None = None
    interval_days: int = 7
    extra_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class MailboxEntry:
    address: str
    name: str = ""
    display_name: str = ""
    password_hash: str | None = None
    quota_bytes: int = 1 << 30
    aliases: tuple[str, ...] = ()
    forward_to: tuple[str, ...] = ()
    keep_copy: bool = True
    suspended: bool = False
    sieve: str | None = None
    auto_reply: AutoReply | None = None
    shard: int | None = None  # the mailstore shard that owns it; absent: shard 0

    @property
    def shard_id(self) -> int:
        return self.shard or 0

    def check_password(self, password: str) -> bool:
        """True when the password matches; always False for a suspended mailbox
        or one without a hash."""
        if self.suspended or not self.password_hash:
            return False
        return passwords.verify(self.password_hash, password)


@dataclass(frozen=True)
class DirectoryFile:
    version: int = FORMAT_VERSION
    mailboxes: tuple[MailboxEntry, ...] = ()


@dataclass(frozen=True)
class Expansion:
    """Where mail for one address ends up: local mailboxes and remote addresses."""

    local: tuple[str, ...] = ()
    remote: tuple[str, ...] = ()


@dataclass
class Directory:
    """An immutable snapshot of the directory, with lookups."""

    mailboxes: tuple[MailboxEntry, ...] = ()
    config: ServerConfig | None = None
    _index: dict[str, MailboxEntry] = field(default_factory=dict, repr=False)
    # What resolve() and expand() found, per address: every service asks the
    # same addresses several times per message (the snapshot never changes;
    # at most _MEMO_ENTRIES each, then started afresh).
    _resolved: dict[tuple[str, bool], Any] = field(default_factory=dict, repr=False, compare=False)
    _expanded: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, MailboxEntry] = {}
        for entry in self.mailboxes:
            index[entry.address.lower()] = entry
        for entry in self.mailboxes:  # aliases never shadow a real mailbox
            for alias in entry.aliases:
                index.setdefault(alias.lower(), entry)
        self._index = index

    def _domain(self, address: str):
        if self.config is None:
            return None
        return self.config.domain_for(addressing.split_address(address)[1])

    def resolve(self, address: str, *, catch_all: bool = True) -> Resolved[MailboxEntry] | None:
        """The mailbox a recipient address reaches and where to deliver it
        (:func:`correo_server.addressing.resolve`: the address or an alias, a
        subaddress, the domain's catch-all)."""
        k = (address, catch_all)
        try:
            return self._resolved[k]
        except KeyError:
            pass
        found = addressing.resolve(address, self._index.get, self._domain(address), catch_all=catch_all)
        if len(self._resolved) >= _MEMO_ENTRIES:
            self._resolved.clear()
        self._resolved[k] = found
        return found

    def recipient(self, address: str) -> MailboxEntry | None:
        """The mailbox mail to ``address`` is delivered to (catch-all included):
        what the relay, the queue and the mailstore accept a recipient by."""
        found = self.resolve(address)
        return found.entry if found is not None else None

    def lookup(self, address: str) -> MailboxEntry | None:
        """The mailbox an address (canonical, alias, or in an alias domain) belongs to.

        Local parts compare case-insensitively, like every mail server people use;
        a subaddress (``bob+lists@``, the domain's ``recipientDelimiter``) finds
        ``bob@`` when no exact match exists.  Never the catch-all: this is how
        logins and senders are found (:meth:`recipient` is for mail).
        """
        found = self.resolve(address, catch_all=False)
        return found.entry if found is not None else None

    def owns(self, mailbox: MailboxEntry, address: str) -> bool:
        """True when ``address`` is the mailbox's own address or one of its aliases
        (in any domain name of its domain): what a submission client may send as."""
        found = self.resolve(address, catch_all=False)
        return found is not None and found.entry.address == mailbox.address and found.detail is None

    def expand(self, address: str) -> Expansion | None:
        """Follow forwards (with loop protection). None when the address is unknown.

        ``local`` holds where to deliver (:attr:`~correo_server.addressing.Resolved.address`:
        the mailbox, with a subaddress kept, or the address a catch-all took)."""
        try:
            return self._expanded[address]
        except KeyError:
            pass
        found = self._expand(address)
        if len(self._expanded) >= _MEMO_ENTRIES:
            self._expanded.clear()
        self._expanded[address] = found
        return found

    def _expand(self, address: str) -> Expansion | None:
        first = self.resolve(address)
        if first is None:
            return None
        local: list[str] = []
        remote: list[str] = []
        seen: set[str] = set()

        def walk(found: Resolved[MailboxEntry]) -> None:
            entry = found.entry
            if entry.address in seen:
                return
            seen.add(entry.address)
            if not entry.forward_to or entry.keep_copy:
                local.append(found.address)
            for target in entry.forward_to:
                nxt = self.resolve(target)
                if nxt is not None:
                    walk(nxt)
                elif target.lower() not in remote:
                    remote.append(target.lower())

        walk(first)
        return Expansion(tuple(local), tuple(remote))

    def __iter__(self):
        return iter(self.mailboxes)

    def __len__(self) -> int:
        return len(self.mailboxes)


def dump(mailboxes: list[MailboxEntry] | tuple[MailboxEntry, ...]) -> str:
    """The YAML text of ``directory.yaml``; deterministic (sorted by address)."""
    doc = to_dict(DirectoryFile(mailboxes=tuple(sorted(mailboxes, key=lambda m: m.address))))
    return yaml_dump(doc)


def parse(text: str, *, source: str = DIRECTORY_FILE, config: ServerConfig | None = None) -> Directory:
    try:
        data = yaml_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    try:
        parsed = _from_dict(DirectoryFile, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {str(exc).lstrip(': ')}") from None
    if parsed.version != FORMAT_VERSION:
        raise ConfigError(f"{source}: version {parsed.version} is not supported")
    return Directory(parsed.mailboxes, config)


def load(config_dir: str | os.PathLike[str], config: ServerConfig | None = None) -> Directory:
    path = Path(config_dir) / DIRECTORY_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    return parse(text, source=str(path), config=config)


T = TypeVar("T")


class Reloading(Generic[T]):
    """A value loaded from files, re-loaded when any of them changes.

    ``get()`` looks at the files at most once per ``interval`` seconds (a
    ``stat`` each, following symlinks so that a Kubernetes volume's ``..data``
    swap is seen).  If reloading fails, the last good value stays in use and
    ``on_error`` is told, so that a half-written file never takes a server down.
    """

    def __init__(
        self,
        paths: list[Path],
        loader: Callable[[], T],
        *,
        interval: float = 1.0,
        on_error: Callable[[Exception], None] | None = None,
        on_reload: Callable[[T], None] | None = None,
    ) -> None:
        self._paths = [Path(p) for p in paths]
        self._loader = loader
        self._interval = interval
        self._on_error = on_error
        self._on_reload = on_reload
        self._lock = threading.Lock()
        self._checked = 0.0
        self._signature = self._stat()
        self._value: T = loader()

    def _stat(self) -> tuple:
        sig = []
        for p in self._paths:
            try:
                st = os.stat(p)
                sig.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                sig.append(None)
        return tuple(sig)

    def get(self) -> T:
        now = time.monotonic()
        if now - self._checked < self._interval:
            return self._value
        with self._lock:
            self._checked = now
            signature = self._stat()
            if signature != self._signature:
                try:
                    value = self._loader()
                except Exception as exc:  # keep serving the last good value
                    if self._on_error:
                        self._on_error(exc)
                else:
                    self._value = value
                    self._signature = signature
                    if self._on_reload:
                        self._on_reload(value)
        return self._value

    def force(self) -> T:
        """Check the files now, whatever the interval."""
        self._checked = 0.0
        return self.get()


# What a reload log names for a changed mailbox: the Mailbox spec's words.
_FIELD_NAMES = {"password_hash": "password", "quota_bytes": "quota", "display_name": "displayName",
                "forward_to": "forwardTo", "keep_copy": "keepCopy", "auto_reply": "autoReply"}


def changes(old: Directory | None, new: Directory) -> dict[str, list[str]]:
    """What a reload changed, for its log line: the addresses ``added`` and
    ``removed``, and ``changed`` as ``address: field, field`` (a password
    change is named, never shown); empty lists left out."""
    if old is None:
        return {}
    before = {m.address.lower(): m for m in old.mailboxes}
    after = {m.address.lower(): m for m in new.mailboxes}
    changed = []
    for address in sorted(set(before) & set(after)):
        a, b = before[address], after[address]
        fields = [f for f in a.__dataclass_fields__ if getattr(a, f) != getattr(b, f)]
        if fields:
            words = [("suspended" if b.suspended else "unsuspended") if f == "suspended" else _FIELD_NAMES.get(f, f)
                     for f in fields]
            changed.append(f"{b.address}: {', '.join(words)}")
    out = {"added": sorted(after[a].address for a in set(after) - set(before)),
           "removed": sorted(before[a].address for a in set(before) - set(after)),
           "changed": changed}
    return {k: v for k, v in out.items() if v}


class ReloadLog:
    """An ``on_reload`` for :func:`watch_directory` that logs
    ``directory_reloaded`` with what changed (:func:`changes`), not only how
    many mailboxes there are now."""

    def __init__(self, log) -> None:
        self.log = log
        self.previous: Directory | None = None

    def __call__(self, new: Directory) -> None:
        found = changes(self.previous, new)
        self.log.info("directory_reloaded", mailboxes=len(new), **(found or {"changed": ["nothing"]}))
        self.previous = new


def watch_directory(config_dir: str | os.PathLike[str], config: ServerConfig, **kwargs) -> Reloading[Directory]:
    """The directory of a configuration folder, reloaded when the file changes."""
    reloading = Reloading([Path(config_dir) / DIRECTORY_FILE], lambda: load(config_dir, config), **kwargs)
    if isinstance(kwargs.get("on_reload"), ReloadLog):
        kwargs["on_reload"].previous = reloading._value  # what the first reload is compared with
    return reloading
