"""Request and response schemas of the sensor API (pydantic); the OpenAPI document is generated from them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.api.schemas import Query


class IngestBody(BaseModel):
    """A JSON ingest payload. Each reading is checked by the ingest job; refusals are listed on its status.

    Readings: `{"sensor": "<tag>", "ts": "<RFC 3339 with offset>", "value": <number>,
    "quality": "good|uncertain|bad"}` (quality optional). The same readings may be sent as `text/csv`
    (`sensor,ts,value[,quality]`).
    """

    model_config = ConfigDict(extra="allow")

    readings: list[dict[str, Any]] = Field(min_length=1, description="Readings: sensor, ts, value, quality?")
    message_id: str | None = Field(default=None, min_length=1, max_length=200,
                                   description="The client's id of this message; a repeat is accepted once")


class IngestCounts(BaseModel):
    """What the ingest job did with the readings of a payload."""

    total: int | None
    stored: int | None
    duplicate: int | None
    rejected: int | None


class OverAllowance(BaseModel):
    """Readings of an ingest beyond the plan's monthly allowance: stored all the same, and flagged."""

    readings: int
    detail: str = Field(description="What happened and the upgrade path")


class IngestStatus(BaseModel):
    """Status of one ingest: queued, processed (with counts and refusals) or failed (with the reason)."""

    id: int
    status: Literal["queued", "processed", "failed"]
    message_id: str | None
    received_at: datetime | None
    size_bytes: int
    duplicate: bool = Field(default=False, description="True when this message id had already been accepted")
    processed_at: datetime | None = None
    readings: IngestCounts | None = None
    error_counts: dict[str, int] | None = None
    errors: list[dict[str, Any]] | None = Field(default=None, description="Refused readings (first 1000)")
    failure: str | None = None
    over_allowance: OverAllowance | None = Field(
        default=None, description="Set when stored readings went beyond the plan's monthly allowance (kept, flagged)")


class TrendQuery(Query):
    """Time window and resolution of a trend."""

    start: datetime = Field(description="Start (inclusive), RFC 3339 with offset")
    end: datetime = Field(description="End (exclusive), RFC 3339 with offset")
    points: int = Field(default=500, ge=1, le=5000, description="About how many buckets to return")

    @model_validator(mode="after")
    def _utc(self) -> TrendQuery:
        # A time without an offset is read as UTC (every stored timestamp is UTC).
        if self.start.tzinfo is None:
            self.start = self.start.replace(tzinfo=UTC)
        if self.end.tzinfo is None:
            self.end = self.end.replace(tzinfo=UTC)
        return self


class TrendBucket(BaseModel):
    """Min, max and mean of a sensor's readings in one time bucket."""

    t: datetime
    min: float
    max: float
    avg: float
    n: int
    quality: Literal["good", "uncertain", "bad"]


class TrendOut(BaseModel):
    """A downsampled trend of one sensor."""

    sensor_id: int
    bucket_s: float
    buckets: list[TrendBucket]


class EpisodeQuery(Query):
    """Filters of the episode list."""

    batch_id: int | None = Field(default=None, ge=0, le=2**63 - 1)
    sensor_id: int | None = Field(default=None, ge=0, le=2**63 - 1)
    kind: Literal["process", "health", "multivariate"] | None = None
    open: bool | None = Field(default=None, description="Only open (true) episodes")
    limit: int = Field(default=100, ge=1, le=500)


class EpisodeOut(BaseModel):
    """One exception episode: one excursion of one rule, with what reproduces it and the evidence link."""

    id: int
    sensor_id: int | None
    equipment_id: int | None
    kind: Literal["process", "health", "multivariate"]
    rule: str
    severity: str
    start: datetime
    end: datetime
    peak: dict[str, Any]
    n_alarms: int
    open: bool
    batch_id: int | None
    step_id: int | None
    spec: dict[str, Any]
    evidence: str | None = None


class EpisodeList(BaseModel):
    """Episodes, newest first."""

    items: list[EpisodeOut]
