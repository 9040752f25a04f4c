"""Which batch and step ran on an equipment item when: the one seam between sensors and batches.

The sensor path asks two questions of the batch record, and only through this module:

* `running_step_at(session, equipment_id, ts)`: the step running on that equipment at that time, or None;
* `running_steps(session, equipment_id, start, end)`: every step that overlaps a time range (the ingest job
  attaches a whole payload with one call per equipment);
* `equipment_of_batch(session, batch_id)`: where a batch runs (`batchline simulate --batch`).

Each `RunningStep` carries the limits of the step's critical parameters by quantity kind (`temperature`,
`pH`, ...), which the analysis job checks the sensor of that kind against.

The answer comes from a `BatchSource`; by default `BatchesAreaSource`, which asks the batches area
(`app.batches.queries.running_steps`: the step in force on the item from its start until the next step on the
item starts or the batch releases the item, with the limits of its critical and key parameters by quantity
kind). `register_batch_source(...)` replaces it (tests, or another execution system).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session


@dataclass(frozen=True)
class StepLimits:
    """Limits of one critical parameter of a step: hard (`low`/`high`) and alarm (`alarm_low`/`alarm_high`)."""

    low: float | None = None
    high: float | None = None
    alarm_low: float | None = None
    alarm_high: float | None = None
    target: float | None = None


@dataclass(frozen=True)
class RunningStep:
    """A step execution of a batch on an equipment item, from `started_at` until `ended_at` (None: running)."""

    batch_id: int
    step_id: int
    started_at: datetime
    ended_at: datetime | None = None
    #: Phase key of the step in its recipe (PCA models can be per phase).
    phase: str = ""
    #: Limits of the step's critical parameters, by the sensor quantity kind they apply to.
    limits: Mapping[str, StepLimits] = field(default_factory=dict)

    def covers(self, ts: datetime) -> bool:
        """True if the step was running at `ts` (start inclusive, end exclusive)."""
        return self.started_at <= ts and (self.ended_at is None or ts < self.ended_at)


class BatchSource(Protocol):
    """What the batches area provides to the sensor path."""

    def running_steps(self, session: Session, *, equipment_id: int, start: datetime,
                      end: datetime) -> Sequence[RunningStep]:
        """Return the steps on `equipment_id` overlapping [start, end], ordered by start."""
        ...

    def equipment_of_batch(self, session: Session, *, batch_id: int) -> Sequence[int]:
        """Return the ids of the equipment a batch runs (or ran) on."""
        ...


class BatchesAreaSource:
    """The batch record of this application (`app.batches`) as the sensor path's BatchSource."""

    def running_steps(self, session: Session, *, equipment_id: int, start: datetime,
                      end: datetime) -> Sequence[RunningStep]:
        """Return the batches area's steps in force on the item during [start, end]."""
        from app.batches.queries import running_steps

        return [RunningStep(batch_id=s.batch_id, step_id=s.step_id, started_at=s.started_at,
                            ended_at=s.in_force_until, phase=s.phase_key,
                            limits={kind: StepLimits(low=v.get("low"), high=v.get("high"),
                                                     alarm_low=v.get("alarm_low"), alarm_high=v.get("alarm_high"),
                                                     target=v.get("target"))
                                    for kind, v in s.limits.items()})
                for s in running_steps(session, equipment_id=equipment_id, start=start, end=end)]

    def equipment_of_batch(self, session: Session, *, batch_id: int) -> Sequence[int]:
        """Return the equipment items assigned to the batch (current assignments, not superseded ones)."""
        from sqlalchemy import select

        from app.batches.models import BatchEquipment

        rows = session.execute(select(BatchEquipment.id, BatchEquipment.equipment_id, BatchEquipment.supersedes_id)
                               .where(BatchEquipment.batch_id == batch_id)).all()
        superseded = {r.supersedes_id for r in rows if r.supersedes_id is not None}
        return [r.equipment_id for r in rows if r.id not in superseded]


_source: BatchSource | None = BatchesAreaSource()


def register_batch_source(source: BatchSource | None) -> BatchSource | None:
    """Install another answer to "what ran where and when" (None: nothing runs); return the previous one."""
    global _source  # one process-wide provider
    previous, _source = _source, source
    return previous


def running_steps(session: Session, *, equipment_id: int, start: datetime, end: datetime) -> list[RunningStep]:
    """Return the steps on an equipment item overlapping [start, end]; empty when no batch source is installed."""
    if _source is None:
        return []
    return sorted(_source.running_steps(session, equipment_id=equipment_id, start=start, end=end),
                  key=lambda step: step.started_at)


def equipment_of_batch(session: Session, batch_id: int) -> list[int]:
    """Return the equipment a batch runs on; empty when no batch source is installed."""
    if _source is None:
        return []
    return list(_source.equipment_of_batch(session, batch_id=batch_id))


def running_step_at(session: Session, equipment_id: int, ts: datetime) -> RunningStep | None:
    """Return the step running on an equipment item at `ts`, or None."""
    for step in running_steps(session, equipment_id=equipment_id, start=ts, end=ts):
        if step.covers(ts):
            return step
    return None
