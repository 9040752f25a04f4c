"""Plant area (ISA-95): sites, areas/lines, equipment with status gates and logbooks, sensors, labels.

Owns: `Site`, `Line`, `Equipment`, `EquipmentLogEntry`, `Sensor`; the status transitions of equipment (every one
a logbook entry and an audit event), `equipment_ready(equipment, at)` for the batch area, the per-line status
board, printable labels and `resolve_scan(session, code)`.
Does not own: batches that use the equipment (`app.batches`), sensor readings (`app.sensors`), materials.
"""

from app.plant.readiness import Readiness, Reason, equipment_ready

__all__ = ["Readiness", "Reason", "equipment_ready"]
