"""Which mailstore shard holds each Mailbox.  Pure: decisions only.

A MailDomain with ``spec.mailstore.shards: N`` runs N mailstore shards (pods
``<name>-mailstore-0`` … ``-<N-1>``, each with its own volume).  Each
Mailbox has exactly one owner, decided by :func:`place`:

1. ``spec.shard`` (a pin), when it names an existing shard;
2. else the shard the directory in force records for the address (the
   directory Secret on Kubernetes, ``directory.yaml`` locally: see
   :func:`shards_in_directory`), so that adding shards moves no mailbox:
   a mailbox stays where its mail is;
3. else, for a mailbox seen for the first time, rendezvous hashing
   (highest random weight) of the address over the shard ids: stable,
   spread evenly, and independent of the other mailboxes.

A directory written before the domain had shards records none: every mailbox
in it was on the one mailstore, shard 0, and stays there.  Rebalancing is an
explicit act (a pin).  A pin that differs from the recorded shard starts a
move (:mod:`.moves`): the directory keeps naming the recorded shard (reason
``Moving``, ``moving_to`` the pin) until the move has copied and verified
the mail on the pinned shard and flips the directory.

``render.directory_entries`` writes the result into the directory
(``MailboxEntry.shard``); ``status`` shows it (``status.shard``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping

import yaml


@dataclass(frozen=True)
class Placement:
    shard: int  # the owner the directory names
    reason: str  # Pinned, Recorded, Hashed, PinOutOfRange, ShardRemoved, Moving
    message: str
    moving_to: int | None = None  # Moving: the pin, where the move (``moves``) takes it

    @property
    def wanted(self) -> int:
        """Where the mailbox should be: the pin while it moves, else its owner."""
        return self.shard if self.moving_to is None else self.moving_to


def rendezvous(address: str, shards: int) -> int:
    """The shard with the highest weight for ``address`` (HRW hashing): adding
    shard N only ever takes addresses to N, never between old shards."""
    key = address.lower().encode("utf-8")
    best, best_weight = 0, -1
    for shard in range(max(shards, 1)):
        weight = int.from_bytes(hashlib.sha256(key + b"\0" + str(shard).encode()).digest()[:8], "big")
        if weight > best_weight:
            best, best_weight = shard, weight
    return best


def place(address: str, shards: int, *, pin: int | None = None, recorded: int | None = None) -> Placement:
    """The owning shard of one mailbox, and why (see the module docstring)."""
    shards = max(shards, 1)
    note = ""
    if pin is not None:
        if 0 <= pin < shards:
            if recorded is not None and 0 <= recorded < shards and recorded != pin:
                return Placement(recorded, "Moving", f"pinned to shard {pin} by spec.shard: moving there from "
                                 f"shard {recorded}, which owns it until its mail is copied and verified", pin)
            return Placement(pin, "Pinned", f"pinned to shard {pin} by spec.shard")
        note = f"spec.shard {pin} does not exist (the MailDomain has {shards} shard(s), 0 to {shards - 1}); "
    if recorded is not None:
        if 0 <= recorded < shards:
            return Placement(recorded, "PinOutOfRange" if note else "Recorded",
                             f"{note}on shard {recorded}, where it was placed")
        hashed = rendezvous(address, shards)
        return Placement(hashed, "ShardRemoved",
                         f"{note}shard {recorded} no longer exists; new mail goes to shard {hashed}; the mail on "
                         f"shard {recorded} stays on its volume: raise spec.mailstore.shards back and set "
                         f"spec.shard: {recorded} to reach it again")
    hashed = rendezvous(address, shards)
    return Placement(hashed, "PinOutOfRange" if note else "Hashed", f"{note}placed on shard {hashed}")


def shards_in_directory(text: str | None) -> dict[str, int]:
    """Mailbox address (lower case) → recorded shard, from a ``directory.yaml``
    text (an entry without ``shard`` is on shard 0); empty when there is none."""
    if not text:
        return {}
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return {}
    out: dict[str, int] = {}
    for item in doc.get("mailboxes") or [] if isinstance(doc, dict) else []:
        if isinstance(item, dict) and isinstance(item.get("address"), str):
            shard = item.get("shard")
            out[item["address"].lower()] = shard if isinstance(shard, int) and shard >= 0 else 0
    return out


def recorded_for(address: str, previous: Mapping[str, int] | None) -> int | None:
    return (previous or {}).get(address.lower())
