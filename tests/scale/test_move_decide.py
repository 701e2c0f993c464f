"""The decisions of a mailbox move (``correo_operator.moves.decide``): one
step at a time from what is recorded (the directory's owner, the source's
fence, the target's verified copy), and a model of the shards in which the
orchestrator, the source or the target crashes at every point of a move
while mail arrives: the move always ends with exactly one owner holding
every message once, and the old copy removed only after the grace."""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

import pytest

from correo_operator import moves, placement
from correo_operator.moves import Copy, Facts, Fence, decide

A = "alice@acme.test"
ALL = frozenset({0, 1, 2})


def facts(owner=0, wanted=1, up=ALL, fences=(), copies=(), now=1000.0, grace=100.0) -> Facts:
    return Facts(A, owner, wanted, frozenset(up), tuple(fences), tuple(copies), now, grace)


def test_a_move_fences_copies_then_switches():
    assert decide(facts()).action == "fence" and decide(facts()).shard == 0
    fenced = Fence(0, 1, "f1")
    step = decide(facts(fences=[fenced]))
    assert (step.action, step.source, step.shard, step.fence, step.reason) == ("copy", 0, 1, "f1", "Copying")
    step = decide(facts(fences=[fenced], copies=[Copy(1, 0, "f1", "d", 990.0, 12)]))
    assert (step.action, step.shard, step.reason, step.moving) == ("flip", 1, "Switching", True)
    assert "12 messages" in step.message


def test_a_copy_made_under_another_fence_or_from_elsewhere_is_made_again():
    assert decide(facts(fences=[Fence(0, 1, "f2")], copies=[Copy(1, 0, "f1")])).action == "copy"
    assert decide(facts(fences=[Fence(0, 1, "f1")], copies=[Copy(1, 2, "f1")])).action == "copy"


def test_a_new_target_refences_for_it():
    step = decide(facts(wanted=2, fences=[Fence(0, 1, "f1")], copies=[Copy(1, 0, "f1")]))
    assert (step.action, step.extra) == ("fence", {"to": 2})


def test_a_shard_that_does_not_answer_holds_the_move_and_says_which():
    step = decide(facts(up={0, 2}))
    assert (step.action, step.reason, step.moving) == ("wait", "ShardUnavailable", True)
    assert "shard 1, which is to take it, does not answer" in step.message
    assert "shard 0, which holds its mail" in decide(facts(up={1})).message


def test_after_the_switch_the_old_copy_stays_for_the_grace_then_goes():
    after = dict(owner=1, wanted=1, fences=[Fence(0, 1, "f1")], copies=[Copy(1, 0, "f1", "d", 950.0)])
    step = decide(facts(**after, now=1000.0))
    assert (step.action, step.reason, step.moving) == ("none", "Moved", False)
    assert "removed after" in step.message
    step = decide(facts(**after, now=1051.0))
    assert (step.action, step.shard) == ("remove", 0)
    step = decide(facts(owner=1, wanted=1, copies=[Copy(1, 0, "f1", "d", 950.0)], now=1051.0))
    assert (step.action, step.shard) == ("settle", 1)
    assert decide(facts(owner=1, wanted=1)).reason == "NotMoving"


def test_a_target_that_cannot_take_the_mailbox_blocks_the_move_without_fencing_or_unfences():
    blocked = "shard 1 already holds mail for it that no move put here"
    step = decide(dataclasses.replace(facts(), blocked=blocked))
    assert (step.action, step.reason, step.moving) == ("wait", "Blocked", True) and blocked in step.message
    step = decide(dataclasses.replace(facts(fences=[Fence(0, 1, "f1")]), blocked=blocked))
    assert (step.action, step.shard, step.reason) == ("unfence", 0, "Blocked")
    # its own verified copy is no block: the switch goes on
    ready = facts(fences=[Fence(0, 1, "f1")], copies=[Copy(1, 0, "f1")])
    assert decide(dataclasses.replace(ready, blocked="a copy of a move is there")).action == "flip"


def test_a_move_called_off_before_the_switch_rolls_back():
    step = decide(facts(owner=0, wanted=0, fences=[Fence(0, 1, "f1")], copies=[Copy(1, 0, "f1")]))
    assert (step.action, step.shard, step.reason) == ("unfence", 0, "RollingBack")
    step = decide(facts(owner=0, wanted=0, copies=[Copy(1, 0, "f1")]))
    assert (step.action, step.shard) == ("discard", 1)


def test_a_pin_on_a_recorded_mailbox_is_a_move_and_the_directory_keeps_the_owner():
    p = placement.place(A, 3, pin=2, recorded=0)
    assert (p.shard, p.reason, p.moving_to, p.wanted) == (0, "Moving", 2, 2)
    p = placement.place(A, 3, pin=2, recorded=2)
    assert (p.shard, p.reason, p.wanted) == (2, "Pinned", 2)
    assert placement.place(A, 3, pin=1).shard == 1  # a new mailbox goes straight to its pin


# -- a model of the shards, with crashes ------------------------------------------------------------

@dataclass
class Shard:
    up: bool = True
    mail: dict[str, list[str]] = field(default_factory=dict)  # mailbox folder → messages (None: no folder)
    fence: Fence | None = None
    copy: Copy | None = None


@dataclass
class World:
    shards: dict[int, Shard]
    owner: int
    wanted: int
    now: float = 0.0
    queue: list[str] = field(default_factory=list)  # deferred messages
    delivered: list[str] = field(default_factory=list)
    fences: itertools.count = field(default_factory=lambda: itertools.count(1))

    def facts(self) -> Facts:
        up = frozenset(i for i, s in self.shards.items() if s.up)
        return Facts(A, self.owner, self.wanted, up,
                     tuple(s.fence for i, s in self.shards.items() if s.fence and s.up),
                     tuple(s.copy for i, s in self.shards.items() if s.copy and s.up), self.now, 50.0)

    def deliver(self, msg: str) -> None:
        """The queue's attempt: the owner stores it unless fenced or down; else it waits."""
        shard = self.shards[self.owner]
        if shard.up and shard.fence is None:
            shard.mail.setdefault(A, []).append(msg)
            self.delivered.append(msg)
        else:
            self.queue.append(msg)

    def retry(self) -> None:
        waiting, self.queue = self.queue, []
        for msg in waiting:
            self.deliver(msg)

    def act(self, step: moves.Step) -> None:
        s = self.shards.get(step.shard)
        if step.action == "fence":
            if s.fence is None or s.fence.to != step.extra["to"]:
                s.fence = Fence(step.shard, step.extra["to"], s.fence.fence if s.fence else f"f{next(self.fences)}")
        elif step.action == "copy":
            src = self.shards[step.source]
            assert src.fence is not None and src.fence.fence == step.fence
            assert self.owner != step.shard  # never overwrite the owner
            s.mail[A] = list(src.mail.get(A, []))
            s.fence = None
            s.copy = Copy(step.shard, step.source, step.fence, "d", self.now, len(s.mail[A]))
        elif step.action == "flip":
            self.owner = step.shard
        elif step.action == "unfence":
            assert self.owner == step.shard
            s.fence = None
        elif step.action in ("discard", "remove"):
            assert self.owner != step.shard  # never remove the owner's mail
            s.mail.pop(A, None)
            s.fence = s.copy = None
        elif step.action == "settle":
            s.copy = None

    def owners_with_mail_served(self) -> set[int]:
        """Shards that would serve the mailbox: the directory's owner, when not fenced."""
        return {i for i, s in self.shards.items() if i == self.owner and s.fence is None}


def run(world: World, crash_at: int | None = None, crash_whom: str = "orchestrator", limit: int = 60) -> int:
    """Run rounds (a message arrives each round) until nothing is left to do; at
    step number ``crash_at`` the orchestrator dies before acting, or the shard
    that acts dies (its action lost) and comes back two rounds later."""
    steps = 0
    down_until: dict[int, int] = {}
    for rnd in range(limit):
        world.now += 10
        for shard, until in list(down_until.items()):
            if rnd >= until:
                world.shards[shard].up = True
                del down_until[shard]
        world.deliver(f"m{rnd}")
        world.retry()
        step = decide(world.facts())
        if step.acts:
            steps += 1
            if steps == crash_at:
                if crash_whom == "orchestrator":
                    continue  # died before acting; a new one starts from the records next round
                victim = step.shard if crash_whom == "target" or step.action != "copy" else step.source
                world.shards[victim].up = False
                down_until[victim] = rnd + 2
                continue
            world.act(step)
        elif step.action == "none" and step.reason in ("NotMoving", "Moved") and not world.queue \
                and not any(s.fence or s.copy for s in world.shards.values()):
            return rnd
        served = world.owners_with_mail_served()
        assert len(served) <= 1
    raise AssertionError(f"the move did not finish: {decide(world.facts())}")


@pytest.mark.parametrize("whom", ["orchestrator", "source", "target"])
@pytest.mark.parametrize("crash_at", range(1, 7))
def test_a_crash_at_any_step_leaves_one_owner_and_every_message_once(whom, crash_at):
    world = World({0: Shard(mail={A: ["old1", "old2"]}), 1: Shard(), 2: Shard()}, owner=0, wanted=1)
    run(world, crash_at=crash_at, crash_whom=whom)
    assert world.owner == 1
    held = world.shards[1].mail[A]
    assert len(held) == len(set(held))  # nothing twice
    assert set(held) == {"old1", "old2", *world.delivered}  # nothing lost
    assert A not in world.shards[0].mail  # the old copy went, after the grace
    assert all(s.fence is None and s.copy is None for s in world.shards.values())


@pytest.mark.parametrize("call_off_at", range(1, 4))
def test_a_pin_set_back_before_the_switch_leaves_the_mail_where_it_was(call_off_at):
    world = World({0: Shard(mail={A: ["old1"]}), 1: Shard(), 2: Shard()}, owner=0, wanted=1)
    for _ in range(call_off_at):
        step = decide(world.facts())
        if step.action == "flip":
            break
        world.act(step)
    world.wanted = 0
    run(world)
    assert world.owner == 0 and set(world.shards[0].mail[A]) == {"old1", *world.delivered}
    assert A not in world.shards[1].mail


def test_the_mailbox_status_says_moving_with_the_step_and_correo_status_shows_it():
    from datetime import datetime, timezone

    from correo_operator import status as st
    from correo_operator.local import statuscmd
    from correo_operator.model import MailDomain, Mailbox

    now = datetime(2026, 12, 5, tzinfo=timezone.utc)
    domain = MailDomain.from_object({"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain",
                                     "metadata": {"name": "acme", "namespace": "mail"},
                                     "spec": {"domain": "acme.test", "mailstore": {"shards": 3}}})

    def box(shard=None):
        spec = {"address": A, "domain": "acme", "passwordSecretRef": {"name": "pw"}}
        if shard is not None:
            spec["shard"] = shard
        return Mailbox.from_object({"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox",
                                    "metadata": {"name": "alice", "namespace": "mail"}, "spec": spec})

    def moving_of(mailbox, **observed):
        s = st.mailbox_status(mailbox, domain, observed=st.Observed(shards={A: 0}, **observed), now=now)
        return s, next(c for c in s["conditions"] if c["type"] == "Moving")

    _, cond = moving_of(box())
    assert (cond["status"], cond["reason"]) == ("False", "NotMoving")
    _, cond = moving_of(box(shard=2))  # pinned elsewhere, the orchestrator has not said anything yet
    assert (cond["status"], cond["reason"]) == ("True", "Pending")
    step = decide(facts(owner=0, wanted=2, fences=[Fence(0, 2, "f")]))
    s, cond = moving_of(box(shard=2), moves={A: {"reason": step.reason, "message": step.message,
                                                 "moving": step.moving}})
    assert (cond["status"], cond["reason"], s["shard"]) == ("True", "Copying", 0)
    lines = statuscmd.table([{"kind": "Mailbox", "metadata": {"name": "alice", "namespace": "mail"},
                              "spec": {"address": A}, "status": s}]).splitlines()
    assert f"  {A}: Moving (Copying): {cond['message']}" in lines
