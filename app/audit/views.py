"""Audit review screens for QA and inspectors: filter, record history, CSV/PDF export, verify, review sign-off."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from flask import Response, g, redirect, render_template, request, url_for
from flask_login import current_user

from app import esign
from app.audit.queries import (
    EXPORT_LIMIT,
    PDF_LIMIT,
    AuditFilters,
    audit_export_rows,
    audit_page,
    changed_fields,
    filter_choices,
    recent_anchors,
    review,
)
from app.audit.registry import RECORD_TYPES, record_history_url, record_page_url, record_type_label
from app.audit.services import create_review, draft_review, verify_chain
from app.core.errors import NotFound
from app.core.tenancy import tenant_transaction
from app.core.web import request_actor, requires, tenant_blueprint
from app.esign.manifest import format_signed_at, manifestation_text

bp = tenant_blueprint("audit", __name__, template_folder="templates")


# Globals, not a context processor: imported macros (the events table, other areas' pages) see them too.
for _helper in (record_history_url, record_page_url, record_type_label, changed_fields):
    bp.add_app_template_global(_helper)


def _signature_checks(session: Any, record_type: str, record_id: str) -> list[esign.SignatureCheck]:
    kind = RECORD_TYPES.get(record_type)
    content = kind.content(session, record_id) if kind and kind.content else None
    signatures = esign.signatures_of(session, record_type=record_type, record_id=record_id)
    if kind is None or kind.content is None:  # the area registered no content: validity cannot be judged here
        return signatures  # type: ignore[return-value]
    return esign.check_signatures(session, signatures, content)


@bp.get("/audit")
@requires("audit.read")
def index() -> Any:
    """The audit trail, filtered by record, user, action and time range, newest first."""
    filters = AuditFilters.from_args(request.args)
    before = request.args.get("before", type=int)
    with tenant_transaction(g.tenant) as session:
        events = audit_page(session, filters, before_seq=before)
        choices = filter_choices(session)
    return render_template("audit/index.html", events=events, filters=filters, choices=choices,
                           require_user_id=esign.identification_required(),
                           sso=esign.sso_signing(record_type="audit_review"),
                           next_before=events[-1].seq if len(events) == 100 else None)


@bp.get("/audit/records/<record_type>/<record_id>")
@requires("audit.read")
def history(record_type: str, record_id: str) -> Any:
    """Everything that happened to one record, with its signatures' manifestation."""
    filters = AuditFilters(record_type=record_type, record_id=record_id)
    with tenant_transaction(g.tenant) as session:
        events = list(reversed(audit_page(session, filters, size=1000)))
        checks = _signature_checks(session, record_type, record_id)
        kind = RECORD_TYPES.get(record_type)
        on_route = (kind is not None and kind.content is not None and not kind.route_on_own_page
                    and (esign.route_state(session, record_type=record_type, record_id=record_id) is not None
                         or esign.active_route(session, record_type) is not None))
    return render_template("audit/history.html", events=events, filters=filters, checks=checks,
                           record_type=record_type, record_id=record_id, on_route=on_route)


def _csv_lines(events: list[Any], truncated: bool) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["seq", "occurred_at_utc", "user", "member_id", "action", "record_type", "record_id", "field",
                     "old", "new", "reason", "signature", "request_id", "client_addr", "hash"])
    for event in events:
        signature = ""
        if event.action == "sign" and event.new_values:
            v = event.new_values
            signature = (f"{v.get('meaning_label')} by {v.get('printed_name')} ({', '.join(v.get('roles') or [])}) "
                         f"on {format_signed_at(event.occurred_at)}")
        fields = changed_fields(event) or [("", None, None)]
        for name, old, new in fields:
            writer.writerow([event.seq, event.occurred_at.isoformat(), event.actor_label, event.actor_member_id or "",
                             event.action, event.record_type, event.record_id, name,
                             "" if old is None else old, "" if new is None else new, event.reason or "", signature,
                             event.request_id or "", event.client_addr or "", event.hash])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if truncated:
        yield f"# export stopped at {EXPORT_LIMIT} events: narrow the filters to export the rest\n"


@bp.get("/audit/export.csv")
@requires("audit.read")
def export_csv() -> Any:
    """The filtered trail as CSV, one line per changed field (old and new side by side)."""
    filters = AuditFilters.from_args(request.args)
    with tenant_transaction(g.tenant) as session:
        events = audit_export_rows(session, filters)
    truncated = len(events) > EXPORT_LIMIT
    response = Response(_csv_lines(events[:EXPORT_LIMIT], truncated), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="audit-{g.tenant.slug}.csv"'
    return response


@bp.get("/audit/export.pdf")
@requires("audit.read")
def export_pdf() -> Any:
    """The filtered trail as a PDF report for inspectors."""
    from weasyprint import HTML  # heavy import, only when a PDF is asked for

    filters = AuditFilters.from_args(request.args)
    with tenant_transaction(g.tenant) as session:
        events = audit_export_rows(session, filters, limit=PDF_LIMIT)
        report = verify_chain(session)
        checks = (_signature_checks(session, filters.record_type, filters.record_id)
                  if filters.record_type and filters.record_id else [])
    html = render_template("audit/pdf/report.html", events=events[:PDF_LIMIT], truncated=len(events) > PDF_LIMIT,
                           filters=filters, report=report, checks=checks, limit=PDF_LIMIT,
                           manifestation_text=manifestation_text)
    pdf = HTML(string=html, base_url=request.host_url).write_pdf()
    response = Response(pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="audit-{g.tenant.slug}.pdf"'
    return response


@bp.get("/audit/verify")
@requires("audit.read")
def verify() -> Any:
    """Verify the chain and its time-stamp anchors now."""
    with tenant_transaction(g.tenant) as session:
        report = verify_chain(session)
        anchors = recent_anchors(session)
    return render_template("audit/verify.html", report=report, anchors=anchors)


@bp.post("/audit/reviews")
@requires("audit.read")
def sign_review() -> Any:
    """Sign off a review of the filtered trail (meaning `reviewed`), re-asking for the password — or, for accounts
    that sign in through SSO, for a fresh login at the identity provider first."""
    filters = AuditFilters.from_args(request.form)
    conclusion = request.form.get("conclusion") or ""
    actor = request_actor()
    if esign.wants_sso_reauth(request.form):
        # The review does not exist before it is signed: reserve its id and fix the stretch of trail it covers,
        # so the re-authentication is bound to exactly what will be signed.
        with tenant_transaction(g.tenant, actor=actor) as session:
            draft = draft_review(session, filters=filters, conclusion=conclusion)
        return esign.start_sso_reauth(
            record_type="audit_review", record_id=draft.id, meaning="reviewed", content=draft.signed_content(),
            return_to=url_for("audit.index", **filters.as_dict(), _anchor="signature"),
            keep={"conclusion": conclusion, "reason": request.form.get("reason") or "",
                  "upto_seq": str(draft.last_seq)})
    reserved: dict[str, int] = {}
    if request.form.get("signature_sso_proof"):
        sso = esign.sso_signing(record_type="audit_review")
        if sso is not None and sso.proof is not None and sso.record_id and sso.kept("upto_seq"):
            reserved = {"review_id": int(sso.record_id), "upto_seq": int(sso.kept("upto_seq"))}
    with tenant_transaction(g.tenant, actor=actor) as session:
        made = create_review(session, filters=filters, conclusion=conclusion, **reserved)
        esign.sign(session, record_type="audit_review", record_id=made.id, content=made.signed_content(),
                   meaning="reviewed", actor=actor, user_id=current_user.id, reason=request.form.get("reason"),
                   **esign.signing_credentials(request.form))
    esign.note_signature_made()
    return redirect(url_for("audit.review", review_id=made.id))


@bp.get("/audit/reviews/<int:review_id>", endpoint="review")
@requires("audit.read")
def review_page(review_id: int) -> Any:
    """A signed-off review with its signature manifestation."""
    with tenant_transaction(g.tenant) as session:
        made = review(session, review_id)
        if made is None:
            raise NotFound(f"no audit review #{review_id}")
        checks = _signature_checks(session, "audit_review", str(review_id))
    return render_template("audit/review.html", review=made, checks=checks)

