"""What FETCH derives from a message's bytes once and keeps: its ENVELOPE,
BODYSTRUCTURE and BODY, as they go on the wire (a :class:`Structure`;
Dovecot keeps the same in ``dovecot.index.cache``).

A message's bytes never change under its UID, so neither do these.  They
are computed the first time a client asks (parsing the message,
:mod:`..message`), kept in a bounded in-memory cache, and saved in the
folder's index (``message_data`` of kind :data:`KIND`, opaque bytes there;
a copy or a move carries them along), so that a client syncing the
envelopes of a large folder — or imaptest's FETCH ENVELOPE BODYSTRUCTURE —
reads the index instead of every message.  The encoding starts with a
version byte: one of an older format is simply computed again.
"""
from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass

from ..message import Entity
from .bodystructure import body_structure
from .envelope import envelope

KIND = "imap.structure"  # in the folder's index (message_data)
VERSION = 1
_LEN = struct.Struct(">I")


@dataclass(frozen=True)
class Structure:
    envelope: bytes
    bodystructure: bytes
    body: bytes

    def encode(self) -> bytes:
        parts = (self.envelope, self.bodystructure, self.body)
        return bytes([VERSION]) + b"".join(_LEN.pack(len(p)) + p for p in parts)

    @classmethod
    def decode(cls, data: bytes) -> "Structure | None":
        """None for anything not of this version (or damaged)."""
        if not data or data[0] != VERSION:
            return None
        parts, i = [], 1
        try:
            for _ in range(3):
                (n,) = _LEN.unpack_from(data, i)
                parts.append(bytes(data[i + 4:i + 4 + n]))
                i += 4 + n
        except struct.error:
            return None
        if i != len(data):
            return None
        return cls(*parts)


def structure_of(entity: Entity) -> Structure:
    return Structure(envelope(entity), body_structure(entity, extended=True), body_structure(entity, extended=False))


class StructureCache:
    """Structures in memory, least recently used out first, bounded in bytes."""

    def __init__(self, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, Structure] = OrderedDict()
        self._size = 0

    @staticmethod
    def _cost(s: Structure) -> int:
        return len(s.envelope) + len(s.bodystructure) + len(s.body) + 200

    def get(self, key: tuple) -> Structure | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: tuple, structure: Structure) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._size -= self._cost(old)
        self._items[key] = structure
        self._size += self._cost(structure)
        while self._size > self.max_bytes and self._items:
            _, gone = self._items.popitem(last=False)
            self._size -= self._cost(gone)
