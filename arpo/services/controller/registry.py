"""The run registry: every run's spec, status and events, in Redis (a controller restart loses nothing).

Expects a client that returns bytes (redis-py's default), like the rest of the platform.

Life cycle: `create` -> PENDING; a learner `claim`s the oldest claimable run -> RUNNING. Exactly one
learner gets it: it must take the run's lease (a key with a TTL that it renews while it trains), and
the transition is a compare-and-set on the status key; a running run whose learner died (lease expired)
is claimed again and resumed from its checkpoint. `stop` asks a running run to finish its step and
checkpoint (STOPPING; a pending run is finished at once); the learner ends it with `finish` (FINISHED or
FAILED with the reason). `delete` removes a finished or failed run's keys. Every change is also appended
to the run's event stream (kind `state`, `metrics` or `log`), which the controller serves as
server-sent events.
"""

from __future__ import annotations

import contextlib
import json
import string
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from arpo.proto import keys
from arpo.proto.runs import RunSpec, RunState, RunStatus, StepMetrics, ValidationMetrics

ENDED = (RunState.FINISHED, RunState.FAILED)
EVENTS_MAXLEN = 10_000
LEASE_S = 30.0  # a learner's lease on its run; renewed every third of it
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RunNotFoundError(KeyError):
    """No run with this id."""


class RunConflictError(RuntimeError):
    """The run is in a state that does not allow the operation (the message says which)."""


def new_run_id(name: str | None) -> str:
    allowed = string.ascii_letters + string.digits + "-_."
    stem = "".join(ch if ch in allowed else "-" for ch in (name or "run"))[:40].strip("-.")
    return f"{stem or 'run'}-{uuid.uuid4().hex[:8]}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _now() -> datetime:
    return datetime.now(UTC)


class RunRegistry:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def create(self, spec: RunSpec, run_id: str | None = None) -> RunStatus:
        run_id = run_id or new_run_id(spec.name)
        now = _now()
        status = RunStatus(
            run_id=run_id, name=spec.name, state=RunState.PENDING, created_at=now, updated_at=now
        )
        if not await self.redis.set(keys.run_spec(run_id), spec.model_dump_json(), nx=True):
            raise RunConflictError(f"run {run_id!r} exists")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.run_status(run_id), status.model_dump_json())
            pipe.zadd(keys.runs_index(), {run_id: now.timestamp()})
            self._event(pipe, run_id, "state", status.model_dump(mode="json"))
            await pipe.execute()
        return status

    async def get(self, run_id: str) -> RunStatus:
        raw = await self.redis.get(keys.run_status(run_id))
        if raw is None:
            raise RunNotFoundError(run_id)
        return RunStatus.model_validate_json(raw)

    async def spec(self, run_id: str) -> RunSpec:
        raw = await self.redis.get(keys.run_spec(run_id))
        if raw is None:
            raise RunNotFoundError(run_id)
        return RunSpec.model_validate_json(raw)

    async def runs(self, limit: int = 100, state: RunState | None = None) -> list[RunStatus]:
        """Newest first (two round trips however many runs: learners and agents poll this; a pipeline of
        GETs, not MGET, because each run's keys live in their own Redis Cluster slot)."""
        ids: Any = await self.redis.zrevrange(keys.runs_index(), 0, -1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.get(keys.run_status(_text(run_id)))
            raws: Any = await pipe.execute()
        statuses = [RunStatus.model_validate_json(r) for r in raws if r is not None]  # None: just deleted
        return [s for s in statuses if state is None or s.state is state][:limit]

    async def _transition(self, run_id: str, change: Callable[[RunStatus], RunStatus | None]) -> RunStatus:
        """Apply `change` atomically (optimistic: retried if the status changed meanwhile). `change` may
        raise RunConflictError, or return None to leave the status as it is."""
        key = keys.run_status(run_id)
        while True:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise RunNotFoundError(run_id)
                    current = RunStatus.model_validate_json(raw)
                    new = change(current)
                    if new is None:
                        return current
                    new = new.model_copy(update={"updated_at": _now()})
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, new.model_dump_json())
                    if new.state is not current.state:
                        self._event(pipe, run_id, "state", new.model_dump(mode="json", exclude={"metrics"}))
                    await pipe.execute()
                    return new
                except WatchError:
                    continue

    async def stop(self, run_id: str) -> RunStatus:
        def change(s: RunStatus) -> RunStatus | None:
            if s.state in ENDED:
                raise RunConflictError(f"run {run_id!r} is already {s.state.value}")
            if s.state is RunState.PENDING:
                return s.model_copy(
                    update={"state": RunState.FINISHED, "reason": "stopped before it started"}
                )
            if s.state is RunState.STOPPING:
                return None
            return s.model_copy(update={"state": RunState.STOPPING, "reason": "stop requested"})

        return await self._transition(run_id, change)

    async def claim(
        self, service: str, run_id: str | None = None, lease_s: float = LEASE_S
    ) -> RunStatus | None:
        """The oldest claimable run (or `run_id`), now RUNNING and leased to `service`; None if none.

        Claimable: pending, or running or stopping with no live learner lease (its learner died: the new
        owner resumes it from its checkpoint; a stopping one is then finished at once). Agents serve
        only runs whose lease is alive.
        """
        live = (RunState.PENDING, RunState.RUNNING, RunState.STOPPING)
        if run_id is not None:
            candidates = [run_id]
        else:
            candidates = [s.run_id for s in reversed(await self.runs(100_000)) if s.state in live]
        won: list[bool] = [False]

        def change(s: RunStatus) -> RunStatus | None:
            won[0] = s.state in live
            if not won[0]:
                return None
            seen = sorted({*s.services_seen, service})
            state = RunState.STOPPING if s.state is RunState.STOPPING else RunState.RUNNING
            return s.model_copy(update={"state": state, "services_seen": seen})

        for candidate in candidates:
            lease = keys.learner_lease(candidate)
            if not await self.redis.set(lease, service, nx=True, px=int(lease_s * 1000)):
                continue  # a live learner owns it
            won[0] = False
            with contextlib.suppress(RunNotFoundError):
                claimed = await self._transition(candidate, change)
            if won[0]:
                return claimed
            await self.release(candidate, service)
        return None

    async def renew(self, run_id: str, service: str, lease_s: float = LEASE_S) -> bool:
        """Extend `service`'s lease on `run_id`; False when it no longer holds it."""
        renewed = await self.redis.eval(_RENEW, 1, keys.learner_lease(run_id), service, int(lease_s * 1000))
        return bool(renewed)

    async def release(self, run_id: str, service: str) -> None:
        await self.redis.eval(_RELEASE, 1, keys.learner_lease(run_id), service)

    async def leased(self, run_id: str) -> bool:
        """Whether a learner holds the run's lease (it is being trained right now)."""
        return bool(await self.redis.exists(keys.learner_lease(run_id)))

    async def report(self, run_id: str, metrics: StepMetrics, service: str) -> RunStatus:
        """A finished step: progress, latest metrics, and a `metrics` event."""

        def change(s: RunStatus) -> RunStatus:
            return s.model_copy(
                update={
                    "step": metrics.step + 1,
                    "policy_version": metrics.policy_version + 1,
                    "metrics": metrics,
                    "services_seen": sorted({*s.services_seen, service}),
                }
            )

        status = await self._transition(run_id, change)
        await self.event(run_id, "metrics", metrics.model_dump(mode="json"))
        return status

    async def seen(self, run_id: str, service: str) -> None:
        def change(s: RunStatus) -> RunStatus | None:
            if service in s.services_seen:
                return None
            return s.model_copy(update={"services_seen": sorted({*s.services_seen, service})})

        await self._transition(run_id, change)

    async def finish(self, run_id: str, state: RunState, reason: str) -> RunStatus:
        if state not in ENDED:
            raise ValueError(f"finish: state must be finished or failed, got {state.value}")
        return await self._transition(
            run_id, lambda s: s.model_copy(update={"state": state, "reason": reason})
        )

    async def delete(self, run_id: str) -> None:
        status = await self.get(run_id)
        if status.state not in ENDED:
            raise RunConflictError(f"run {run_id!r} is {status.state.value}: stop it first")
        async for key in self.redis.scan_iter(match=keys.run_keys_pattern(run_id), count=1000):
            await self.redis.delete(key)
        await self.redis.zrem(keys.runs_index(), run_id)

    def _event(self, pipe: Any, run_id: str, kind: str, body: Any) -> None:
        pipe.xadd(
            keys.run_events(run_id),
            {"kind": kind, "body": json.dumps(body)},
            maxlen=EVENTS_MAXLEN,
            approximate=True,
        )

    async def event(self, run_id: str, kind: str, body: Any) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            self._event(pipe, run_id, kind, body)
            await pipe.execute()

    async def events(
        self, run_id: str, after: str = "0-0", block_ms: int | None = None
    ) -> list[dict[str, Any]]:
        """Events after stream id `after` (each: id, kind, body); waits up to `block_ms` for new ones."""
        got: Any = await self.redis.xread({keys.run_events(run_id): after}, count=500, block=block_ms)
        return [
            {"id": _text(entry_id), "kind": _text(fields[b"kind"]), "body": json.loads(fields[b"body"])}
            for _, entries in got or []
            for entry_id, fields in entries
        ]

    async def metrics(self, run_id: str, since_step: int = 0) -> list[StepMetrics]:
        await self.get(run_id)
        entries: Any = await self.redis.xrange(keys.run_metrics(run_id))
        out = []
        for _, fields in entries:
            m = StepMetrics.model_validate_json(fields[b"body"])
            if m.step >= since_step:
                out.append(m)
        return out

    async def validation(self, run_id: str) -> list[ValidationMetrics]:
        await self.get(run_id)
        entries: Any = await self.redis.xrange(keys.run_validation(run_id))
        return [ValidationMetrics.model_validate_json(fields[b"body"]) for _, fields in entries]
