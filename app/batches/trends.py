"""Sensor trends of a batch's equipment for its record: the readings of each sensor while the batch occupied the
item (from the sensor path's downsampled buckets), the steps' limits, and the sensor episodes of the batch.

Drawn server-side as SVG, so the EBR page, its PDF and its JSON show the same data (no script, no CDN).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.batches.models import Batch, EquipmentUse
from app.plant.models import Sensor

#: Buckets per chart: enough for a 14-day culture at a readable resolution, small enough for the PDF.
POINTS = 240
WIDTH, HEIGHT, PAD = 720, 180, 28


def batch_trends(session: Session, batch: Batch) -> dict[str, Any]:
    """Trend buckets of every sensor on the equipment the batch occupied, over each occupation."""
    from app.batches.queries import step_limits
    from app.batches.services import control_recipe_of
    from app.sensors import queries as sensor_queries

    uses = session.scalars(select(EquipmentUse).where(EquipmentUse.batch_id == batch.id)
                           .order_by(EquipmentUse.id)).all()
    now = session.execute(select(func.now())).scalar_one()
    charts = []
    limits_by_kind: dict[str, dict[str, Any]] = {}
    if uses:
        from app.batches.services import control_document

        try:
            doc = control_document(control_recipe_of(session, batch))
            for phase in doc.phases():
                for kind, limits in step_limits(doc, phase).items():
                    limits_by_kind.setdefault(kind, limits)
        except Exception:
            limits_by_kind = {}
    for use in uses:
        end: datetime = use.ended_at or now
        sensors = session.scalars(select(Sensor).where(Sensor.equipment_id == use.equipment_id)
                                  .order_by(Sensor.tag)).all()
        for sensor in sensors:
            buckets = sensor_queries.trend(session, sensor_id=sensor.id, start=use.started_at, end=end, points=POINTS)
            charts.append({"sensor": sensor.tag, "kind": sensor.quantity_kind, "unit": sensor.unit,
                           "equipment": use.equipment_tag, "start": use.started_at.isoformat(),
                           "end": end.isoformat(), "in_use": use.ended_at is None,
                           "limits": limits_by_kind.get(sensor.quantity_kind), "buckets": buckets})
    episodes = [sensor_queries.episode_doc(row) for row in sensor_queries.episodes(session, batch_id=batch.id,
                                                                                   limit=500)]
    for e in episodes:
        e.pop("evidence", None)
    return {"charts": charts, "episodes": sorted(episodes, key=lambda e: (e["start"], e["id"]))}


def _scale(lo: float, hi: float) -> tuple[float, float]:
    if hi - lo < 1e-9:
        return lo - 1, hi + 1
    margin = (hi - lo) * 0.08
    return lo - margin, hi + margin


def trend_svg(chart: dict[str, Any]) -> Markup:
    """One chart as SVG: min/max band, mean line, the recipe's limits (red) and alarm band (amber)."""
    buckets = [b for b in chart["buckets"] if b.get("avg") is not None]
    title = f"{chart['sensor']} ({chart['kind']}, {chart['unit']}) on {chart['equipment']}"
    if not buckets:
        return Markup(  # noqa: S704 (every interpolated text is escaped; the rest is our own markup)
            f'<svg class="trend" viewBox="0 0 {WIDTH} 40" role="img" aria-label="{escape(title)}">'
            f'<text x="4" y="24">{escape(title)}: no readings while the batch used the equipment</text></svg>')
    t0 = datetime.fromisoformat(chart["start"]).timestamp()
    t1 = max(datetime.fromisoformat(chart["end"]).timestamp(), t0 + 1)
    limits = chart.get("limits") or {}
    values = [b["min"] for b in buckets] + [b["max"] for b in buckets]
    values += [v for k, v in limits.items() if k in ("low", "high", "alarm_low", "alarm_high") and v is not None]
    lo, hi = _scale(min(values), max(values))

    def x(ts: str) -> float:
        return round(PAD + (datetime.fromisoformat(ts).timestamp() - t0) / (t1 - t0) * (WIDTH - 2 * PAD), 1)

    def y(v: float) -> float:
        return round(HEIGHT - PAD - (v - lo) / (hi - lo) * (HEIGHT - 2 * PAD), 1)

    band = [f"{x(b['t'])},{y(b['max'])}" for b in buckets] + [f"{x(b['t'])},{y(b['min'])}" for b in reversed(buckets)]
    line = " ".join(f"{x(b['t'])},{y(b['avg'])}" for b in buckets)
    parts = [f'<svg class="trend" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
             f'<text x="{PAD}" y="14" font-size="11">{escape(title)}</text>',
             f'<polygon points="{" ".join(band)}" fill="#c9dcf0" stroke="none"/>',
             f'<polyline points="{line}" fill="none" stroke="#0b5cad" stroke-width="1.5"/>']
    for key, colour in (("low", "#b00020"), ("high", "#b00020"), ("alarm_low", "#a86400"), ("alarm_high", "#a86400")):
        value = limits.get(key)
        if value is not None:
            parts.append(f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{y(value)}" y2="{y(value)}" stroke="{colour}" '
                         f'stroke-dasharray="4 3"/><text x="{WIDTH - PAD + 2}" y="{y(value) + 4}" font-size="9" '
                         f'fill="{colour}">{value:g}</text>')
    parts.append(f'<text x="2" y="{PAD}" font-size="9">{hi:.4g}</text>'
                 f'<text x="2" y="{HEIGHT - PAD}" font-size="9">{lo:.4g}</text>'
                 f'<text x="{PAD}" y="{HEIGHT - 8}" font-size="9">{escape(chart["start"][:16])}Z</text>'
                 f'<text x="{WIDTH - PAD - 90}" y="{HEIGHT - 8}" font-size="9">{escape(chart["end"][:16])}Z</text>'
                 "</svg>")
    return Markup("".join(parts))  # noqa: S704 (every interpolated text is escaped above; numbers are ours)
