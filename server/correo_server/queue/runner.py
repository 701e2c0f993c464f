"""The scheduler loop and the delivery workers.

One loop keeps a heap of (due time, message) and sleeps on the injected clock
until the earliest one, or until something new arrives (then it wakes at
once: a retry due in two seconds happens in two seconds, not on a coarse
tick).  What is already due when it is (re)scheduled, such as a message the
relay just handed over, is dispatched at once, without the heap.  What is due
comes from :mod:`.schedule`; the loop turns it into

- **jobs**: one message, its due recipients for one route (:mod:`.outbound`),
  queued per route and taken by workers; at most
  ``queue.concurrencyPerDestination`` workers per route and
  ``queue.concurrencyTotal`` in all.  The mailstore route is limited by the
  total only: it is not one destination but every hosted mailbox (four
  workers for all local mail made delivery fall behind what the relay
  accepts).  A worker keeps its connection between jobs and lingers a little
  for more work, unless other routes are waiting;
- **notices**: a "delayed" or "failed" DSN (:mod:`.dsn`) written into the
  spool as a new message from ``<>`` (through :mod:`.intake`).

Every outcome is an event committed to the journal (:mod:`.spool`) before a
message file is removed or a notice is counted, so a crash repeats at most the
step that was in flight.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from dataclasses import dataclass

from .. import logs
from ..statusdoc import rfc3339
from ..config import ServerConfig
from ..metrics import Registry
from . import dsn, schedule
from .clock import Clock
from .intake import Intake, Refusal, dedupe
from .mx import MXResolver
from .outbound import MAILSTORE, Result, Route, Session, Settings, route_for
from .records import BOUNCED, DEFERRED, Message, QueueState, attempt_event, delete_event, notice_event, retry_event
from ..wire.replies import local_reply
from .spool import Spool

log = logs.get(__name__)

MAX_SLEEP = 30.0  # re-read the clock at least this often (wall-clock jumps)


def _linger_over(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


@dataclass
class Job:
    msg_id: str
    indices: list[int]
    route: Route


class Runner:
    def __init__(self, *, cfg: ServerConfig, state: QueueState, spool: Spool, clock: Clock, intake: Intake,
                 resolver: MXResolver, metrics: Registry, settings: Settings | None = None,
                 linger: float = 2.0) -> None:
        self.cfg = cfg
        self.state = state
        self.spool = spool
        self.clock = clock
        self.intake = intake
        self.resolver = resolver
        self.metrics = metrics
        self.settings = settings or Settings.from_config(cfg, clock)
        self.linger = linger
        self.per_destination = max(1, cfg.queue.concurrency_per_destination)
        self.total_limit = max(1, cfg.queue.concurrency_total)
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._jobs: dict[str, deque[Job]] = {}
        self._workers: dict[str, int] = {}
        self._sleepers: dict[str, deque[asyncio.Future]] = {}  # idle workers of a route, each waiting
        self._total = 0
        self._active_jobs = 0
        self._tasks: set[asyncio.Task] = set()
        self._background: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None
        self._stopping = False
        self._inline = False  # dispatching from reschedule (no second level)

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        for msg in self.state:
            self.reschedule(msg)
        self._loop_task = asyncio.create_task(self._loop(), name="queue-runner")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop dispatching; let deliveries in flight finish (up to ``grace``
        seconds), then cancel the rest: their recipients stay due on disk."""
        self._stopping = True
        self._wake.set()
        for sleepers in self._sleepers.values():
            self._wake_sleepers(sleepers, len(sleepers))
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        pending = list(self._tasks | self._background)
        if pending:
            _done, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)

    def policy(self, msg: Message):
        return schedule.policy_for(self.cfg, msg.env)

    # -- scheduling ------------------------------------------------------------
    def reschedule(self, msg: Message) -> None:
        if self.state.get(msg.id) is not msg:
            return
        due = schedule.next_due(self.policy(msg), msg)
        if due is None or (msg.heap_due is not None and msg.heap_due <= due):
            return
        if not self._inline and self.running and not self._stopping:
            now = self.clock.now()
            if due <= now:
                # Due already (new mail, mostly): dispatched here and now
                # rather than through the heap and a wake-up of the loop.
                msg.heap_due = None  # an entry still in the heap is stale now
                self._inline = True
                try:
                    self._dispatch(msg, now)
                except Exception:  # noqa: BLE001 - one bad message must not stop the queue
                    log.exception("dispatch_failed", queue_id=msg.id)
                finally:
                    self._inline = False
                self.reschedule(msg)
                return
        msg.heap_due = due
        entry = (due, next(self._seq), msg.id)
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:
            self._wake.set()

    def next_due(self) -> float | None:
        """The earliest time something is due (for tests driving a fake clock)."""
        while self._heap:
            due, _, mid = self._heap[0]
            msg = self.state.get(mid)
            if msg is not None and msg.heap_due == due:
                return due
            heapq.heappop(self._heap)
        return None

    async def _loop(self) -> None:
        while not self._stopping:
            now = self.clock.now()
            while self._heap and self._heap[0][0] <= now:
                due, _, mid = heapq.heappop(self._heap)
                msg = self.state.get(mid)
                if msg is None or msg.heap_due != due:
                    continue  # stale entry
                msg.heap_due = None
                try:
                    self._dispatch(msg, now)
                except Exception:  # noqa: BLE001 - one bad message must not stop the queue
                    log.exception("dispatch_failed", queue_id=mid)
                self.reschedule(msg)
            self._wake.clear()
            delay = MAX_SLEEP
            if self._heap:
                delay = min(max(self._heap[0][0] - now, 0.0), MAX_SLEEP)
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        if self._wake.is_set():
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                if not task.done():
                    task.cancel()

    def _dispatch(self, msg: Message, now: float) -> None:
        due = schedule.due_now(self.policy(msg), msg, now)
        if due.recipients:
            groups: dict[str, Job] = {}
            shard_of = self._shard_of if self.cfg.mailstore.shards else None
            for i in due.recipients:
                route = route_for(self.cfg, msg.env, msg.env.recipients[i], shard_of)
                groups.setdefault(route.key, Job(msg.id, [], route)).indices.append(i)
                msg.rcpts[i].busy = True
            for job in groups.values():
                self._queue_job(job)
        elif due.failure_notice:
            self._spawn_notice(msg, dsn.FAILED, due.failure_notice)
        elif due.delayed_notice:
            self._spawn_notice(msg, dsn.DELAYED, due.delayed_notice)

    def _shard_of(self, address: str) -> int:
        """The mailstore shard of a local recipient, from the directory now."""
        entry = self.intake.directory().recipient(address)
        return entry.shard_id if entry is not None else 0

    # -- committing ------------------------------------------------------------
    async def commit(self, events: list[dict]) -> None:
        """Journal events and apply them; returns once they are durable."""
        assert self.spool.journal is not None
        fut = self.spool.journal.append(events)
        for ev in events:
            self.state.apply(ev)
        await fut

    def _settle(self, msg: Message) -> None:
        """After a change: a finished message leaves the spool, others wait for their next turn."""
        if self.state.get(msg.id) is not msg:
            return
        if msg.complete() and not msg.busy:
            if not msg.removing:
                msg.removing = True
                self._remove(msg)
        else:
            self.reschedule(msg)

    def _remove(self, msg: Message) -> None:
        """A finished message leaves the spool and the state at once (its
        final events are committed; its segment's space goes with a later
        disk batch): no task per message."""
        self.spool.remove(msg.id)
        self.state.remove(msg.id)
        self.metrics.inc("queue_finished_total")
        log.debug("removed", queue_id=msg.id)

    @staticmethod
    def _track(tasks: set, task: asyncio.Task) -> None:
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # -- workers ---------------------------------------------------------------
    def _queue_job(self, job: Job) -> None:
        self._jobs.setdefault(job.route.key, deque()).append(job)
        self._pump()

    def _starved(self) -> bool:
        """Work waits for a worker that the total limit does not allow."""
        if self._total < self.total_limit:
            return False
        return any(dq and self._workers.get(k, 0) < self._limit(k) and len(dq) > len(self._sleepers.get(k, ()))
                   for k, dq in self._jobs.items())

    def _limit(self, key: str) -> int:
        """Workers allowed for one route."""
        return self.total_limit if key.startswith(MAILSTORE.key) else self.per_destination

    @staticmethod
    def _wake_sleepers(sleepers: deque, n: int) -> None:
        """Wake ``n`` idle workers (one per job: not every idle worker for each)."""
        while n > 0 and sleepers:
            fut = sleepers.popleft()
            if not fut.done():
                fut.set_result(None)
                n -= 1

    def _pump(self) -> None:
        if self._stopping:
            return
        for key, dq in list(self._jobs.items()):
            if not dq:
                continue
            sleepers = self._sleepers.get(key)
            idle = len(sleepers) if sleepers else 0
            if idle:
                self._wake_sleepers(sleepers, len(dq))  # type: ignore[arg-type]
            need = len(dq) - idle
            while need > 0 and self._workers.get(key, 0) < self._limit(key) and self._total < self.total_limit:
                self._spawn_worker(dq[0].route)
                need -= 1
        if self._starved():  # idle workers of other routes make room
            for sleepers in self._sleepers.values():
                self._wake_sleepers(sleepers, len(sleepers))

    def _spawn_worker(self, route: Route) -> None:
        self._workers[route.key] = self._workers.get(route.key, 0) + 1
        self._total += 1
        self._track(self._tasks, asyncio.create_task(self._worker(route), name=f"deliver-{route.key}"))

    async def _worker(self, route: Route) -> None:
        key = route.key
        session = Session(route, self.settings, self.resolver)
        loop = asyncio.get_running_loop()
        try:
            deadline = loop.time() + self.linger
            while not self._stopping:
                dq = self._jobs.get(key)
                if dq:
                    job = dq.popleft()
                    try:
                        await self._run_job(session, job)
                    except Exception:  # noqa: BLE001 - e.g. the journal closed at shutdown
                        log.exception("delivery_job_failed", queue_id=job.msg_id, route=key)
                        session._drop()
                    deadline = loop.time() + self.linger
                    continue
                if self._starved() or loop.time() >= deadline:
                    break
                # Idle: wait to be handed work (or to make room), until the linger ends.
                fut = loop.create_future()
                sleepers = self._sleepers.setdefault(key, deque())
                sleepers.append(fut)
                timer = loop.call_at(deadline, _linger_over, fut)
                try:
                    await fut
                finally:
                    timer.cancel()
                    if not fut.done():
                        fut.cancel()
                    if fut in sleepers:  # not handed work: no longer waiting (a miss in remove() costs a repr)
                        sleepers.remove(fut)
        finally:
            try:
                await asyncio.wait_for(asyncio.shield(session.close()), 5.0)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._workers[key] -= 1
            self._total -= 1
            if not self._workers[key]:
                del self._workers[key]
                self._sleepers.pop(key, None)
                if not self._jobs.get(key):
                    self._jobs.pop(key, None)
            self._pump()

    async def _run_job(self, session: Session, job: Job) -> None:
        msg = self.state.get(job.msg_id)
        if msg is None:
            return  # deleted meanwhile
        self._active_jobs += 1
        try:
            try:
                data = await self.spool.read(msg.id)
            except FileNotFoundError:
                for i in job.indices:
                    msg.rcpts[i].busy = False
                return
            rcpts = [(i, msg.env.recipients[i]) for i in job.indices]
            started = time.monotonic()
            try:
                results = await session.deliver(msg.env, data, rcpts)
            except Exception as exc:  # noqa: BLE001 - a bug must not lose mail: retry later
                log.exception("delivery_crashed", queue_id=msg.id, route=job.route.key)
                session._drop()
                reply = local_reply(451, "4.3.0", f"internal error while delivering: {type(exc).__name__}")
                results = [Result(i, reply, "local", job.route.key) for i in job.indices]
            self.metrics.observe("queue_delivery_duration_seconds", time.monotonic() - started, route=job.route.kind)
            await self._record(msg, results)
        finally:
            self._active_jobs -= 1

    async def _record(self, msg: Message, results: list[Result]) -> None:
        now = self.clock.now()
        if self.state.get(msg.id) is not msg:  # deleted (``correo queue delete``) while the attempt ran
            for res in results:
                msg.rcpts[res.index].busy = False
                if res.reply.code < 300:  # too late to stop: it has left
                    log.info("delivered", queue_id=msg.id, rcpt=msg.rcpts[res.index].rcpt.address,
                             server=res.server, reply=str(res.reply), note="deleted from the queue during the attempt")
                else:
                    log.info("attempt_dropped", queue_id=msg.id, rcpt=msg.rcpts[res.index].rcpt.address,
                             server=res.server, reply=str(res.reply), reason="deleted from the queue during the attempt")
            return
        policy = self.policy(msg)
        events = []
        for res in results:
            r = msg.rcpts[res.index]
            # our mailstore down (4.4.x), or its mailbox between shards (4.2.0: moving, or not here yet)
            hop_down = res.destination.startswith("mailstore") and (res.reply.enhanced.startswith("4.4.")
                                                                     or res.reply.enhanced == "4.2.0")
            out = schedule.after_attempt(policy, msg.env.arrival, r.attempt_count + 1, now, res.reply.code,
                                         str(res.reply), hop_down=hop_down)
            events.append(attempt_event(msg, res.index, time=now, server=res.server, destination=res.destination,
                                        remote_mta=res.remote_mta, reply=out.reason, state=out.state,
                                        next_attempt=out.next_attempt))
            self.metrics.inc("queue_attempts_total", destination=res.destination, result=out.state)
            log_fn = log.info if out.state != BOUNCED else log.warning
            log_fn(out.state, queue_id=msg.id, rcpt=r.rcpt.address, server=res.server, reply=out.reason,
                   **({"next_attempt": rfc3339(out.next_attempt)} if out.state == DEFERRED else {}))
            if out.state == BOUNCED and msg.env.unverified and msg.env.sender:  # no backscatter
                self.metrics.inc("queue_notices_suppressed_total", reason=msg.env.unverified)
                log.warning("notice_suppressed", queue_id=msg.id, sender=msg.env.sender, rcpt=r.rcpt.address,
                            reason=f"the sender failed {msg.env.unverified.upper()}: no failure notice to it")
        try:
            await self.commit(events)
        finally:
            for res in results:
                msg.rcpts[res.index].busy = False
            self._settle(msg)

    # -- notices -----------------------------------------------------------------
    def _spawn_notice(self, msg: Message, kind: str, indices: list[int]) -> None:
        msg.notice_busy = True
        self._track(self._background, asyncio.create_task(self._notice(msg, kind, indices), name=f"notice-{msg.id}"))

    async def _notice(self, msg: Message, kind: str, indices: list[int]) -> None:
        now = self.clock.now()
        policy = self.policy(msg)
        env = msg.env
        try:
            data = await self.spool.read(msg.id)
            notice = dsn.build(kind, hostname=self.cfg.hostname, env=env, recipients=[msg.rcpts[i] for i in indices],
                               header=data, now=now, retry_until=schedule.retry_until(policy, env),
                               warn_after=policy.warn_after_seconds)
            notice_id = f"{env.id}{'D' if kind == dsn.DELAYED else 'F'}{min(indices)}"
            created = None
            target = self.intake.expand(env.sender)
            if isinstance(target, Refusal):
                log.warning("notice_undeliverable", queue_id=env.id, sender=env.sender, reason=str(target.reply))
            else:
                created = await self.intake.accept(
                    "", dedupe([target]), notice.data, smtputf8=not env.sender.isascii(),
                    body="7BIT" if notice.data.isascii() else "8BITMIME", msg_id=notice_id,
                    created_by=env.domain, notice=kind, about=env.id, schedule=False)
            await self.commit([notice_event(msg, kind, indices, time=now, notice_id=notice_id)])
            self.metrics.inc("queue_notices_total", kind=kind)
            log.info("notice_queued", queue_id=env.id, kind=kind, notice_id=notice_id, sender=env.sender,
                     recipients=len(indices))
            if created is not None:
                self.reschedule(created)
        except FileNotFoundError:
            pass  # the message was deleted meanwhile
        except Exception as exc:  # noqa: BLE001 - disk full and the like: try again later
            log.error("notice_failed", queue_id=env.id, kind=kind, error=str(exc))
            msg.notice_retry_at = now + schedule.NOTICE_RETRY_SECONDS
        finally:
            msg.notice_busy = False
            self._settle(msg)

    # -- admin ---------------------------------------------------------------------
    async def retry(self, msg_id: str) -> int | None:
        """Attempt every undelivered recipient of a message now; None if unknown."""
        msg = self.state.get(msg_id)
        if msg is None:
            return None
        count = sum(1 for r in msg.rcpts if not r.final)
        await self.commit([retry_event(msg_id, self.clock.now())])
        msg.notice_retry_at = 0.0
        self.reschedule(msg)
        return count

    async def retry_all(self) -> tuple[int, int]:
        now = self.clock.now()
        msgs = [m for m in self.state if any(not r.final for r in m.rcpts)]
        if not msgs:
            return 0, 0
        await self.commit([retry_event(m.id, now) for m in msgs])
        for m in msgs:
            m.notice_retry_at = 0.0
            self.reschedule(m)
        return len(msgs), sum(1 for m in msgs for r in m.rcpts if not r.final)

    async def delete(self, msg_id: str) -> bool:
        """Remove a message (no notice is sent)."""
        if self.state.get(msg_id) is None:
            return False
        # Out of the spool first: no snapshot may name the record live once
        # the state no longer has the message (it would come back).
        self.spool.remove(msg_id)
        await self.commit([delete_event(msg_id, self.clock.now())])
        log.info("deleted", queue_id=msg_id)
        return True

    # -- for tests and readiness -------------------------------------------------
    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    def quiet(self) -> bool:
        """Nothing in flight and nothing due at the clock's current time."""
        if self._active_jobs or self._background or any(self._jobs.values()):
            return False
        due = self.next_due()
        return due is None or due > self.clock.now()

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait (real time) until :meth:`quiet`; tests use it between clock moves."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        streak = 0
        while True:
            streak = streak + 1 if self.quiet() else 0
            if streak >= 2:
                return
            if loop.time() > end:
                raise TimeoutError("queue did not become idle")
            await asyncio.sleep(0.001)


__all__ = ["Runner", "Job"]
