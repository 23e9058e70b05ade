"""An agent worker: consumes branch requests of one run and runs their trajectories, many at a time.

The loop keeps up to `max_inflight` trajectories running. Free slots are filled first with entries
idle longer than `idle_timeout_s` (their worker died: XAUTOCLAIM), then with new ones (XREADGROUP). While
a trajectory runs, its claim is renewed every `idle_timeout_s / 3`; if another worker took it meanwhile,
this one stops the trajectory and does not acknowledge. An entry is acknowledged only after its
trajectory's nodes and leaf are written. A malformed entry, or one delivered more than `max_attempts`
times, goes to the dead-letter stream (the latter also counts its trajectory as finished, so the tree
completes without it). `stop()` (SIGTERM) stops reading; running trajectories get `grace_s` to finish,
and what is still running then is left unacknowledged for another worker to reclaim.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arpo.proto.tree import BranchRequest
from arpo.services.agent import trajectory
from arpo.services.agent.store import Entry

log = logging.getLogger(__name__)


@dataclass
class WorkerCounters:
    """What this worker did; every increment is also added to the run's counters in Redis."""

    started: int = 0
    acked: int = 0
    reclaimed: int = 0
    lost: int = 0
    failed: int = 0
    dead_letters: int = 0


class Worker:
    def __init__(
        self,
        ctx: trajectory.Context,
        consumer: str,
        max_inflight: int = 32,
        idle_timeout_s: float = 10.0,
        max_attempts: int = 3,
        block_ms: int = 200,
        grace_s: float = 30.0,
    ) -> None:
        self.ctx, self.consumer = ctx, consumer
        self.max_inflight, self.idle_ms = max_inflight, int(idle_timeout_s * 1000)
        self.renew_s = idle_timeout_s / 3
        self.max_attempts, self.block_ms, self.grace_s = max_attempts, block_ms, grace_s
        self.counters = WorkerCounters()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def inflight(self) -> int:
        """Trajectories running now."""
        return len(self._tasks)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Serve until `stop()`; a lost Redis connection is retried (the server may be restarting)."""
        while not self._stopping.is_set():
            try:
                await self._serve()
            except (RedisConnectionError, RedisTimeoutError) as err:
                log.warning("redis unavailable (%s); retrying in 1s", err)
                await asyncio.sleep(1.0)
        if self._tasks:
            _, running = await asyncio.wait(self._tasks, timeout=self.grace_s)
            for task in running:  # left pending: another worker reclaims them after the idle timeout
                task.cancel()

    async def _serve(self) -> None:
        store = self.ctx.store
        await store.ensure_group()
        while not self._stopping.is_set():
            free = self.max_inflight - len(self._tasks)
            if free == 0:
                await asyncio.wait(self._tasks, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                continue
            entries = await store.reclaim(self.consumer, free, self.idle_ms)
            if entries:
                await self._count("reclaimed", len(entries))
            if len(entries) < free:
                block = None if entries or self._tasks else self.block_ms  # (0 would block forever)
                entries += await store.read(self.consumer, free - len(entries), block)
            for entry in entries:
                task = asyncio.create_task(self.handle(entry))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if not entries and self._tasks:
                await asyncio.wait(
                    self._tasks, timeout=self.block_ms / 1000, return_when=asyncio.FIRST_COMPLETED
                )

    async def handle(self, entry: Entry) -> None:
        store = self.ctx.store
        try:
            request = BranchRequest.model_validate_json(entry.body or "")
        except ValidationError as err:
            await self._dead(entry, None, f"malformed: {err.errors()[0]['msg'] if err.errors() else err}")
            return
        if entry.deliveries > self.max_attempts:
            await self._dead(entry, request, f"failed {entry.deliveries - 1} deliveries")
            return
        await self._count("started")
        work = asyncio.create_task(trajectory.run(self.ctx, request))
        renew = asyncio.create_task(self._renew(entry, work))
        try:
            await work
        except trajectory.LostClaimError as err:
            await self._count("lost")
            log.info("%s: %s", request.request_id, err)
            return
        except asyncio.CancelledError:
            if not work.cancelled():
                raise
            await self._count("lost")  # the claim went to another worker
            return
        except Exception:
            await self._count("failed")  # not acknowledged: redelivered after the idle timeout
            log.exception("trajectory %s failed (delivery %d)", request.request_id, entry.deliveries)
            return
        finally:
            renew.cancel()
        if await store.ack(self.consumer, entry.entry_id):
            await self._count("acked")

    async def _count(self, field: str, n: int = 1) -> None:
        setattr(self.counters, field, getattr(self.counters, field) + n)
        try:
            await self.ctx.store.count(field, n)
        except RedisError as err:  # counters are best effort; the work itself is not
            log.warning("could not count %s: %s", field, err)

    async def _renew(self, entry: Entry, work: asyncio.Task[None]) -> None:
        while True:
            await asyncio.sleep(self.renew_s)
            if not await self.ctx.store.renew(self.consumer, entry.entry_id):
                work.cancel()
                return

    async def _dead(self, entry: Entry, request: BranchRequest | None, reason: str) -> None:
        store = self.ctx.store
        await store.dead_letter(entry, reason)
        if request is not None:
            await store.finish(request, None)
        await store.ack(self.consumer, entry.entry_id)
        await self._count("dead_letters")
        log.warning("dead letter %s: %s", entry.entry_id, reason)
