"""Review screens: the QA queue, a batch's review page (readiness, RBE report, dispositions, release), the RBE
report as PDF and JSON, deviations with their aging, metrics and the rule set. Thin: parse, call a service or a
query, render. Every form works without JavaScript; `app/static/review.js` only refreshes the live readiness.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, flash, g, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from app import esign
from app.core.errors import BatchlineError
from app.core.jobs import PERIODIC_JOBS, enqueue
from app.core.tenancy import tenant_transaction
from app.core.web import request_actor, requires, tenant_blueprint
from app.review import (
    hooks,  # noqa: F401  (starts the RBE job when a batch completes)
    queries,
    report,
    services,
)
from app.review.models import (
    CAPA_KINDS,
    DEVIATION_CLASSIFICATIONS,
    DEVIATION_TEXTS,
    ExceptionDisposition,
)
from app.review.rules import SEVERITIES, default_document

bp = tenant_blueprint("review", __name__, template_folder="templates")

#: The scheduler fans the catch-up sweep out to every tenant (deterministic job ids per slot).
SWEEP = ("app.review.jobs:review_sweep", "REVIEW_SWEEP_INTERVAL_S")
if SWEEP not in PERIODIC_JOBS:
    PERIODIC_JOBS.append(SWEEP)


@bp.record_once
def _defaults(state: Any) -> None:
    state.app.config.setdefault("REVIEW_SWEEP_INTERVAL_S", 60)
    state.app.jinja_env.globals.setdefault("review_trend_path", report.svg_path)
    state.app.jinja_env.globals.setdefault("human_duration", queries.human_duration)


def _tx() -> Any:
    return tenant_transaction(g.tenant, actor=request_actor())


def _signed(fn: Any, done: str, back: str) -> Any:
    """Run a signing service; on a refusal say why and go back (nothing was stored)."""
    try:
        with _tx() as session:
            fn(session)
    except BatchlineError as exc:
        flash(str(exc), "error")
        return redirect(back, 303)
    esign.note_signature_made()
    flash(done, "ok")
    return redirect(back, 303)


def _act(fn: Any, done: str, back: str) -> Any:
    """Run a service; on a refusal say why and go back."""
    try:
        with _tx() as session:
            fn(session)
    except BatchlineError as exc:
        flash(str(exc), "error")
        return redirect(back, 303)
    flash(done, "ok")
    return redirect(back, 303)


def _credentials() -> dict[str, Any]:
    return esign.signing_credentials(request.form)


# -- queue and batch review ------------------------------------------------------------------------------------


@bp.get("/review/")
@requires("batches.review")
def queue() -> Any:
    """Batches awaiting QA review, oldest first (or most critical first)."""
    sort = "critical" if request.args.get("sort") == "critical" else "age"
    with tenant_transaction(g.tenant) as session:
        rows = queries.review_queue(session, sort=sort)
    return render_template("review/queue.html", rows=rows, sort=sort, severities=SEVERITIES)


def _review_back(batch_id: int) -> str:
    return url_for("review.batch", batch_id=batch_id)


@bp.get("/review/batches/<int:batch_id>")
@requires("batches.review")
def batch(batch_id: int) -> Any:
    """A batch's review page: readiness, the RBE report, dispositions, deviations and the release decision."""
    with tenant_transaction(g.tenant) as session:
        r = report.build_report(session, batch_id)
        open_deviations = [d for d in r["deviations"] if d["status"] == "open"]
    return render_template("review/batch.html", r=r, severities=SEVERITIES, classifications=DEVIATION_CLASSIFICATIONS,
                           open_deviations=open_deviations, require_user_id=esign.identification_required())


@bp.get("/review/batches/<int:batch_id>/readiness.json")
@requires("batches.read")
def readiness_json(batch_id: int) -> Any:
    """Live release readiness of a batch (open exceptions by severity, what blocks release)."""
    with tenant_transaction(g.tenant) as session:
        return jsonify(queries.release_readiness(session, batch_id).as_dict())


@bp.post("/review/batches/<int:batch_id>/rbe")
@requires("batches.review")
def run_checks(batch_id: int) -> Any:
    """Queue an RBE run over the batch (the `reports` worker runs it)."""
    with _tx() as session:
        enqueue(session, "app.review.jobs:run_rbe_job", batch_id=batch_id, trigger="on_demand")
    flash("The review-by-exception checks are queued; this page shows the new run once it has finished.", "ok")
    return redirect(_review_back(batch_id), 303)


@bp.get("/review/batches/<int:batch_id>/report.json")
@requires("batches.review")
def report_json(batch_id: int) -> Any:
    """The RBE report as JSON (same content as the PDF)."""
    with tenant_transaction(g.tenant) as session:
        r = report.build_report(session, batch_id)
    return Response(json.dumps(r, ensure_ascii=False, indent=1, sort_keys=True), mimetype="application/json",
                    headers={"Content-Disposition": f'attachment; filename="RBE-{r["batch"]["batch_number"]}.json"'})


@bp.get("/review/batches/<int:batch_id>/report.pdf")
@requires("batches.review")
def report_pdf(batch_id: int) -> Any:
    """The RBE report as PDF (content hash and page numbers in every footer)."""
    with tenant_transaction(g.tenant) as session:
        r = report.build_report(session, batch_id)
    return Response(report.render_pdf(r), mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="RBE-{r["batch"]["batch_number"]}.pdf"'})


@bp.post("/review/batches/<int:batch_id>/dispositions")
@requires("batches.review")
def dispose(batch_id: int) -> Any:
    """Disposition the chosen exceptions: accept with a justification, or escalate to a deviation (signed)."""
    form = request.form
    decision = form.get("decision", "")
    ids = [int(i) for i in form.getlist("exception_id") if i.isdigit()]
    deviation_id = form.get("deviation_id") or None
    new_deviation = None
    if decision == "escalated" and not deviation_id:
        new_deviation = {"title": form.get("deviation_title", ""),
                         "classification": form.get("deviation_classification", ""),
                         "description": form.get("deviation_description", ""),
                         "immediate_action": form.get("deviation_immediate_action", "")}
    return _signed(lambda s: services.dispose_exceptions(
        s, batch_id=batch_id, exception_ids=ids, decision=decision, justification=form.get("reason", ""),
        user_id=current_user.id, credentials=_credentials(),
        deviation_id=int(deviation_id) if deviation_id and deviation_id.isdigit() else None,
        new_deviation=new_deviation), "Disposition signed.", _review_back(batch_id))


def _disposition_batch(disposition_id: int) -> int:
    with tenant_transaction(g.tenant) as session:
        row = session.get(ExceptionDisposition, disposition_id)
        return row.batch_id if row else 0


@bp.post("/review/dispositions/<int:disposition_id>/countersign")
@requires("batches.review")
def countersign(disposition_id: int) -> Any:
    """The second signature of a disposition (another person)."""
    batch_id = _disposition_batch(disposition_id)
    return _signed(lambda s: services.countersign_disposition(
        s, disposition_id=disposition_id, user_id=current_user.id, credentials=_credentials()),
        "Second signature made.", _review_back(batch_id) if batch_id else url_for("review.queue"))


@bp.post("/review/dispositions/<int:disposition_id>/decline")
@requires("batches.review")
def decline(disposition_id: int) -> Any:
    """Decline a disposition awaiting its second signature (signed, with the reason)."""
    batch_id = _disposition_batch(disposition_id)
    return _signed(lambda s: services.decline_disposition(
        s, disposition_id=disposition_id, reason=request.form.get("reason", ""), user_id=current_user.id,
        credentials=_credentials()), "Disposition declined; its exceptions await a new decision.",
        _review_back(batch_id) if batch_id else url_for("review.queue"))


@bp.post("/review/batches/<int:batch_id>/decision")
@requires("batches.release")
def decide(batch_id: int) -> Any:
    """Release or reject the batch with an e-signature."""
    decision = request.form.get("decision", "")
    done = "Batch released." if decision == "released" else "Batch rejected."
    return _signed(lambda s: services.decide_batch(
        s, batch_id=batch_id, decision=decision, reason=request.form.get("reason", ""), user_id=current_user.id,
        credentials=_credentials()), done, _review_back(batch_id))


@bp.post("/review/batches/<int:batch_id>/concern")
@requires("batches.execute")
def concern(batch_id: int) -> Any:
    """An operator flags a comment as a concern for QA (it becomes an exception)."""
    step = request.form.get("step_id") or None
    back = request.form.get("next") or url_for("batches.batch", batch_id=batch_id)
    if not back.startswith("/"):
        back = url_for("batches.batch", batch_id=batch_id)
    return _act(lambda s: services.flag_concern(s, batch_id=batch_id, comment=request.form.get("comment", ""),
                                                step_id=int(step) if step and step.isdigit() else None),
                "Concern raised for QA review.", back)


# -- deviations ------------------------------------------------------------------------------------------------


@bp.get("/deviations/")
@requires("batches.read")
def deviations() -> Any:
    """Deviations, newest first, with their age, CAPA and the aging of open ones."""
    status = request.args.get("status") or None
    with tenant_transaction(g.tenant) as session:
        data = queries.deviation_list(session, status=status)
    return render_template("review/deviations.html", data=data, status=status,
                           classifications=DEVIATION_CLASSIFICATIONS)


@bp.post("/deviations/")
@requires("deviations.manage")
def open_deviation() -> Any:
    """Open a deviation (outside any exception disposition)."""
    form = request.form
    batch_id = form.get("batch_id") or None
    created: dict[str, int] = {}

    def run(session: Any) -> None:
        created["id"] = services.open_deviation(
            session, batch_id=int(batch_id) if batch_id and batch_id.isdigit() else None,
            title=form.get("title", ""), classification=form.get("classification", ""),
            description=form.get("description", ""), immediate_action=form.get("immediate_action", "")).id

    try:
        with _tx() as session:
            run(session)
    except BatchlineError as exc:
        flash(str(exc), "error")
        return redirect(url_for("review.deviations"), 303)
    flash("Deviation opened.", "ok")
    return redirect(url_for("review.deviation", deviation_id=created["id"]), 303)


@bp.get("/deviations/<int:deviation_id>")
@requires("batches.read")
def deviation(deviation_id: int) -> Any:
    """A deviation: investigation, root cause, impact, CAPA, linked exceptions and closure."""
    from app.accounts.models import Membership, User
    from app.core.tenancy import control_session
    from app.review.services import DEVIATION_RECORD, deviation_closure_content

    with tenant_transaction(g.tenant) as session:
        data = queries.deviation_detail(session, deviation_id)
        d = data["deviation"]
        checks = []
        if d.closure_summary is not None:
            checks = esign.check_signatures(session, esign.signatures_of(
                session, record_type=DEVIATION_RECORD, record_id=d.id),
                deviation_closure_content(session, d, d.closure_summary))
    with control_session() as control:
        members = control.execute(select(Membership.id, User.name, User.email)
                                  .join(User, User.id == Membership.user_id)
                                  .where(Membership.tenant_id == g.tenant.id, Membership.active.is_(True),
                                         User.active.is_(True)).order_by(User.name)).all()
    return render_template("review/deviation.html", **data, checks=checks, members=members, texts=DEVIATION_TEXTS,
                           kinds=CAPA_KINDS, classifications=DEVIATION_CLASSIFICATIONS,
                           require_user_id=esign.identification_required())


def _deviation_back(deviation_id: int) -> str:
    return url_for("review.deviation", deviation_id=deviation_id)


@bp.post("/deviations/<int:deviation_id>")
@requires("deviations.manage")
def update_deviation(deviation_id: int) -> Any:
    """Record investigation texts (changing recorded text needs a reason)."""
    changes = {k: request.form[k] for k in (*DEVIATION_TEXTS, "title", "classification") if k in request.form}
    return _act(lambda s: services.update_deviation(s, deviation_id=deviation_id, changes=changes,
                                                    reason=request.form.get("change_reason")),
                "Deviation updated.", _deviation_back(deviation_id))


@bp.post("/deviations/<int:deviation_id>/capas")
@requires("deviations.manage")
def add_capa(deviation_id: int) -> Any:
    """Add a CAPA action with its owner and due date."""
    form = request.form
    return _act(lambda s: services.add_capa(s, deviation_id=deviation_id, kind=form.get("kind", ""),
                                            description=form.get("description", ""),
                                            owner_member_id=form.get("owner_member_id", ""),
                                            due_date=form.get("due_date", "")),
                "CAPA action added.", _deviation_back(deviation_id))


@bp.post("/deviations/<int:deviation_id>/capas/<int:capa_id>")
@requires("deviations.manage")
def finish_capa(deviation_id: int, capa_id: int) -> Any:
    """Mark a CAPA action done or cancelled."""
    return _act(lambda s: services.finish_capa(s, capa_id=capa_id, status=request.form.get("status", ""),
                                               note=request.form.get("note", "")),
                "CAPA action updated.", _deviation_back(deviation_id))


@bp.post("/deviations/<int:deviation_id>/close")
@requires("deviations.manage")
def close_deviation(deviation_id: int) -> Any:
    """QA closes the deviation with an e-signature."""
    return _signed(lambda s: services.close_deviation(s, deviation_id=deviation_id,
                                                      summary=request.form.get("reason", ""),
                                                      user_id=current_user.id, credentials=_credentials()),
                   "Deviation closed.", _deviation_back(deviation_id))


# -- metrics and rules -----------------------------------------------------------------------------------------


@bp.get("/review/metrics")
@requires("batches.read")
def metrics() -> Any:
    """Completion-to-release time, exceptions per batch by category, right-first-time rate."""
    with tenant_transaction(g.tenant) as session:
        m = queries.metrics(session)
    if request.args.get("format") == "json":
        return jsonify(m)
    return render_template("review/metrics.html", m=m)


@bp.get("/review/rules")
@requires("batches.review")
def rules() -> Any:
    """The tenant's effective rule set, its versions, and (for admins) the form to change it."""
    from app.review.models import ReviewRuleSet

    with tenant_transaction(g.tenant) as session:
        rule_set = services.current_rule_set(session)
        versions = list(session.scalars(select(ReviewRuleSet).order_by(ReviewRuleSet.id.desc()).limit(50)))
    return render_template("review/rules.html", rule_set=rule_set, versions=versions, severities=SEVERITIES,
                           default=default_document())


@bp.post("/review/rules")
@requires("settings.manage")
def update_rules() -> Any:
    """Save a new version of the tenant's overrides (one row per class in the form)."""
    default = default_document()
    overrides: dict[str, dict[str, Any]] = {}
    for code, spec in default["classes"].items():
        change: dict[str, Any] = {}
        severity = request.form.get(f"{code}.severity", "")
        if severity and severity != "default" and severity != spec["severity"]:
            change["severity"] = severity
        blocking = request.form.get(f"{code}.blocking") == "on"
        if blocking != spec["blocking"]:
            change["blocking"] = blocking
        signatures = request.form.get(f"{code}.signatures", "")
        if signatures.isdigit() and int(signatures) != spec["signatures"]:
            change["signatures"] = int(signatures)
        if change:
            overrides[code] = change
    return _act(lambda s: services.update_rules(s, overrides=overrides, reason=request.form.get("reason", "")),
                "New rule-set version saved.", url_for("review.rules"))
