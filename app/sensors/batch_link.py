"""Which batch and step ran on an equipment item when: the one seam between sensors and batches.

The sensor path asks two questions of the batch record, and only through this module:

* `running_step_at(session, equipment_id, ts)`: the step running on that equipment at that time, or None;
* `running_steps(session, equipment_id, start, end)`: every step that overlaps a time range (the ingest job
  attaches a whole payload with one call per equipment);
* `equipment_of_batch(session, batch_id)`: where a batch runs (`batchline simulate --batch`).

Each `RunningStep` carries the limits of the step's critical parameters by quantity kind (`temperature`,
`pH`, ...), which the analysis job checks the sensor of that kind against.

The batches area answers by registering a `BatchSource` at import (`register_batch_source(...)` in its
`__init__`). Until one is registered, both functions answer "nothing is running", so readings are stored with
no batch and step and no recipe limits are checked: an honest gap, never invented data.
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


_source: BatchSource | None = None


def register_batch_source(source: BatchSource | None) -> None:
    """Install the batches area's answer to "what ran where and when" (None removes it)."""
    global _source  # one process-wide provider, installed at import by the batches area
    _source = source


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
