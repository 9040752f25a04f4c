"""Review area: review by exception — the rule set, the RBE checks, dispositions, deviations and batch release.

Owns: the exception rule set (default `tenants/review_rules.json`, versioned; per-tenant overrides of severity,
blocking and signatures per class), the RBE job (`reports` queue) and its checks (`app.review.engine.CHECKS`),
each run recorded with the checks that ran and the rule-set version; live release readiness; the QA review
queue; signed dispositions (one or two signatures by rule); deviations with investigation, root cause, impact,
CAPA and signed closure; release and rejection of batches (e-signature, audit anchor, produced lots follow);
the RBE report (page, PDF, JSON) with its audit-trail review section; review metrics; operator concerns.
Does not own: the exceptions' table and the batch record (`app.batches`: the engine raises exceptions there and
so does the RBE), sensor readings and episodes (`app.sensors`), lots (`app.materials`), signatures
(`app.esign`), the audit trail (`app.audit`).

Other areas use: `app.review.queries.release_readiness(session, batch_id)` (live status of a batch),
`app.review.services.flag_concern(session, batch_id=..., comment=...)` (an operator's concern for QA).
"""
