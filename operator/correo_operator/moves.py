"""Mailbox moves between mailstore shards: what to do next.  Pure.

A move starts when a Mailbox's wanted shard (its ``spec.shard`` pin,
:func:`.placement.place` ``moving_to``) differs from the shard the
directory in force records (its owner).  The directory keeps the old owner
until the copy on the new shard is verified; then the move *flips* it.
Everything the decision needs is recorded where it happens, so that a
crash of either shard or of the orchestrator at any point leaves a state
this function continues from (cert-manager style: observe, decide one
step, act, observe again):

- the directory: the owner (exactly one, always);
- the source shard: its fence (``correo-move-out.json``: target, fence id),
  which stops deliveries (``451 4.2.0``) and logins for the mailbox;
- the target shard: its verified copy (``correo-move-in.json``: source,
  fence id, digest, time), put in place whole or not at all.

The steps, and the ``Moving`` condition's reason while each is next:

==============  =========================================  ======================
reason          next step                                  on
==============  =========================================  ======================
Fencing         fence the mailbox for the target           the owner (source)
Copying         stream, unpack and verify the copy         source → target
Switching       flip the directory to the target           the directory
Moved           (grace) then remove the old copy,          the old owner, then
                then forget the copy's marker              the new one
RollingBack     the wanted shard is the owner again        the owner, any copies
                before the flip: unfence, drop copies
Blocked         the target holds mail of the mailbox that     the owner: unfenced
                no move put there: not fenced (or unfenced),  if it was
                nothing overwritten, until an administrator
                settles it
ShardUnavailable  wait for the source or target to answer
==============  =========================================  ======================

The mailbox is unavailable (deliveries deferred, logins ``[UNAVAILABLE]``)
from the fence to the flip; the old copy is kept ``grace`` seconds after
the copy was made, then removed (a shard never removes, nor overwrites
by import, a mailbox the directory gives it).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

DEFAULT_GRACE_SECONDS = 3600.0
GRACE_ENV = "CORREO_MOVE_GRACE_SECONDS"  # how long the old copy is kept (operator and correo up)


def grace_from_environment() -> float:
    try:
        return max(0.0, float(os.environ.get(GRACE_ENV, DEFAULT_GRACE_SECONDS)))
    except ValueError:
        return DEFAULT_GRACE_SECONDS


@dataclass(frozen=True)
class Fence:
    shard: int  # where it is (the source)
    to: int
    fence: str
    since: float = 0.0


@dataclass(frozen=True)
class Copy:
    shard: int  # where it is (the target)
    source: int
    fence: str
    digest: str = ""
    at: float = 0.0
    messages: int = 0


@dataclass(frozen=True)
class Facts:
    address: str
    owner: int  # the directory in force
    wanted: int  # where it should be
    up: frozenset[int]  # shards that answered
    fences: tuple[Fence, ...] = ()
    copies: tuple[Copy, ...] = ()
    now: float = 0.0
    grace: float = DEFAULT_GRACE_SECONDS
    blocked: str = ""  # why the target cannot take the mailbox (its preflight check), if it cannot


@dataclass(frozen=True)
class Step:
    action: str  # none, wait, fence, copy, flip, unfence, discard, remove, settle
    reason: str
    message: str
    moving: bool = False  # the Moving condition
    shard: int | None = None  # where the action happens (copy, flip: the target)
    source: int | None = None  # copy: from where
    fence: str | None = None  # copy: the fence it is made under
    extra: dict = field(default_factory=dict)

    @property
    def acts(self) -> bool:
        return self.action not in ("none", "wait")


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def decide(f: Facts) -> Step:
    """The next step for one mailbox (see the module docstring)."""
    fences = {x.shard: x for x in f.fences}
    copies = {c.shard: c for c in f.copies}
    src, dst = f.owner, f.wanted
    if dst != src:
        for need in (src, dst):
            if need not in f.up:
                role = "holds its mail" if need == src else "is to take it"
                return Step("wait", "ShardUnavailable",
                            f"moving from shard {src} to shard {dst}: shard {need}, which {role}, does not "
                            "answer; the move goes on when it does", moving=True, shard=need)
        fx = fences.get(src)
        copy = copies.get(dst)
        if f.blocked and not (copy is not None and fx is not None and copy.fence == fx.fence):
            if fx is not None:  # never hold the mailbox unavailable for a move that cannot finish
                return Step("unfence", "Blocked", f"the move to shard {dst} cannot go on: {f.blocked}; shard "
                            f"{src} takes deliveries and logins again", moving=True, shard=src)
            return Step("wait", "Blocked", f"not moved to shard {dst}: {f.blocked}; it stays on shard {src}",
                        moving=True, shard=dst)
        if fx is None or fx.to != dst:
            return Step("fence", "Fencing", f"moving from shard {src} to shard {dst}: stopping deliveries "
                        f"and logins on shard {src}", moving=True, shard=src, extra={"to": dst})
        if copy is None or copy.fence != fx.fence or copy.source != src:
            return Step("copy", "Copying", f"moving from shard {src} to shard {dst}: copying and verifying "
                        "the mail (new mail waits in the queue)", moving=True, shard=dst, source=src,
                        fence=fx.fence)
        return Step("flip", "Switching", f"moving from shard {src} to shard {dst}: the copy is verified "
                    f"({copy.messages} messages); the directory now names shard {dst}", moving=True,
                    shard=dst, source=src, fence=fx.fence)
    # the owner is where it should be: finish or undo what is left
    own_fence = fences.get(src)
    if own_fence is not None:
        if src not in f.up:
            return Step("wait", "ShardUnavailable", f"the move to shard {own_fence.to} was called off; shard "
                        f"{src} does not answer yet to take deliveries again", moving=True, shard=src)
        return Step("unfence", "RollingBack", f"the move to shard {own_fence.to} was called off before the "
                    f"switch: shard {src} takes deliveries and logins again", moving=True, shard=src)
    mine = copies.get(src)
    for shard, copy in sorted(copies.items()):
        if shard != src and shard in f.up:  # a copy of a move that did not happen
            return Step("discard", "RollingBack", f"removing the unused copy on shard {shard}", shard=shard)
    for shard, fx in sorted(fences.items()):
        if shard == src:
            continue
        old_copy = mine is not None and mine.source == shard and mine.fence == fx.fence
        if old_copy and f.now < mine.at + f.grace:
            return Step("none", "Moved", f"moved from shard {shard} to shard {src} at {_when(mine.at)}; the old "
                        f"copy on shard {shard} is removed after {_when(mine.at + f.grace)}", shard=shard)
        if shard not in f.up:
            return Step("wait", "Moved", f"moved to shard {src}; the old copy on shard {shard} is removed "
                        "when that shard answers", shard=shard)
        return Step("remove", "Moved", f"moved to shard {src}; removing the old copy on shard {shard}",
                    shard=shard)
    if mine is not None:
        return Step("settle", "Moved", f"moved from shard {mine.source} to shard {src} at {_when(mine.at)}; "
                    "the old copy is removed", shard=src)
    return Step("none", "NotMoving", f"on shard {src}")


def involved(owner: int, wanted: int, fences: tuple[Fence, ...], copies: tuple[Copy, ...]) -> bool:
    """Is there anything for :func:`decide` to do or report about this mailbox?"""
    return owner != wanted or bool(fences) or bool(copies)
