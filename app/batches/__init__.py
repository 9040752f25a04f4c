"""Batches area: electronic batch records executed by operators on tablets (EBR; 21 CFR 211.188, Part 11).

Owns: batches planned from an approved, effective recipe version (numbered from the tenant's pattern), the
control recipe frozen at release to the floor, step executions, entries (inserted only; corrections and
re-weighs supersede), batch exceptions for review by exception, signed supervisor overrides, the batch event log,
equipment occupancy, the tablet screens, the EBR view and its PDF/JSON exports.
Does not own: recipes (`app.recipes`), equipment and its gate (`app.plant`), lots, movements and their gate
(`app.materials`), signatures (`app.esign`), exception disposition and batch release (review, issue 9).

For the sensor path (issue 8): `app.batches.queries.running_step_at(session, equipment_id, ts)` returns
`(batch_id, step_execution_id)` of the step in force on an equipment item at `ts`, or None; see its docstring.
"""
