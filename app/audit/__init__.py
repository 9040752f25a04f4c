"""Audit area: the tenant's append-only, hash-chained audit trail (21 CFR 11.10(e), Annex 11 §9).

Owns: `AuditEvent`, `record()` / `record_many()` (called by every area inside its own transaction),
`verify_chain()`, RFC 3161 anchoring of the chain head (`anchor_chain()`, `request_anchor()`, the periodic
`app.audit.jobs:anchor_audit_chain`), the self-test, signed audit-trail reviews, and the review screens.
The chain is computed by the database itself (a BEFORE INSERT trigger), so no writer — the app, a bulk
load, or someone with SQL access and the tenant role — can insert an event with a forged hash or sequence.
Does not own: e-signatures (`app.esign`), security events of sign-in (`app.accounts`).

The GMP record convention every area follows (enforced by `tests/audit/test_gmp_tables.py`):

1. Every tenant table declares `info["gmp"]`: `__table_args__ = {"info": gmp_table_info("lot")}` for a table of
   GMP records (optionally `privileges="append_only"`), `{"info": NOT_GMP}` (`{"gmp": False}`) for plumbing.
2. The area registers the record type next to its model:
   `register_record_type("lot", label="Material lot", table="lots", endpoint="materials.lot", id_arg="lot_id",
   content=lambda session, record_id: ...)` — the endpoint lets the trail link to the record's page, the content
   loader lets signature checks run on any screen.
3. `protect_gmp_table(Lot.__table__)` attaches the triggers refusing DELETE and TRUNCATE (even for the owner);
   the area's migration runs the same `CREATE TRIGGER <table>_no_delete / _no_truncate ... EXECUTE FUNCTION
   gmp_refuse_change()` statements (see `gmp_trigger_sql`).
4. Each service calls `record(session, action=..., record_type=..., record_id=..., old=..., new=..., reason=...)`
   exactly once per create / correct / status_change, in the same transaction as the change; corrections and
   status changes need a reason (422 otherwise). A delete request is answered 409 after
   `refuse_deletion(session, ..., reason=...)` recorded the attempt (commit it, then answer); the JSON APIs route
   `DELETE` of their records to `app.audit.deletion.refuse_delete_request(record_type, record_id)`, which does both.
5. Record pages link to their history with `record_history_url(record_type, record_id)` (a Jinja global too).
"""
