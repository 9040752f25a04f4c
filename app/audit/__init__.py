"""Audit area: the tenant's append-only, hash-chained audit trail (21 CFR 11.10(e), Annex 11 §9).

Owns: `AuditEvent`, `record()` (called by every area inside its own transaction), `verify_chain()`.
The chain is computed by the database itself (a BEFORE INSERT trigger), so no writer — the app, a bulk
load, or someone with SQL access and the tenant role — can insert an event with a forged hash or sequence.
Does not own: e-signatures (`app.esign`), security events of sign-in (`app.accounts`).
"""
