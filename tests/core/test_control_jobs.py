"""The control-plane outbox: jobs with no tenant (provisioning, Stripe events) get the tenant outbox's guarantees."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.core.jobs import ControlOutboxMessage, enqueue_control, relay_control, run_control_job
from app.core.mail import send_mail
from app.core.tenancy import control_session
from tests.support_saas import mails, run_jobs


def _count() -> int:
    with control_session() as session:
        return session.scalar(select(func.count()).select_from(ControlOutboxMessage))


def test_rolled_back_control_job_never_exists(app) -> None:
    before = _count()
    with pytest.raises(RuntimeError), control_session() as session:
        enqueue_control(session, "app.billing.jobs:process_stripe_event", event_id="evt_never")
        raise RuntimeError("the unit of work fails after enqueueing")
    assert _count() == before


def test_only_control_jobs_can_be_enqueued_on_the_control_outbox(app) -> None:
    with pytest.raises(ValueError, match="not marked with @control_job"), control_session() as session:
        enqueue_control(session, "app.core.jobs:whoami")


def test_failing_control_job_records_its_error_and_a_rerun_is_a_noop(app) -> None:
    with control_session() as session:
        outbox_id = enqueue_control(session, "app.signup.services:provision_signup", signup_id=987654321).id
    run_jobs()
    with control_session() as session:
        row = session.get(ControlOutboxMessage, outbox_id)
        assert row.finished_at is None and row.failures == 2 and "sign-up 987654321 not found" in row.last_error
    assert relay_control(app, min_age_s=0) == 0  # dispatched already: the relay does not push it again


def test_file_mail_backend_writes_a_message(app, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(app.config, "MAIL_DIR", str(tmp_path))
    message_id = send_mail(to="qa@example.com", subject="Deviation opened", body="DEV-1 needs you.")
    [msg] = mails(tmp_path)
    assert msg["To"] == "qa@example.com" and msg["Message-ID"] == message_id
    assert "DEV-1 needs you." in msg.get_payload(decode=True).decode()
    with pytest.raises(ValueError, match="unknown MAIL_BACKEND"):
        monkeypatch.setitem(app.config, "MAIL_BACKEND", "pigeon")
        send_mail(to="qa@example.com", subject="x", body="y")


def test_redelivered_control_job_returns_the_first_result(app, make_tenant) -> None:
    from app.billing.models import StripeEvent

    with control_session() as session:
        session.add(StripeEvent(id="evt_control_test", type="customer.created",
                                payload={"id": "evt_control_test", "type": "customer.created",
                                         "data": {"object": {"object": "customer", "id": "cus_1"}}}))
        outbox_id = enqueue_control(session, "app.billing.jobs:process_stripe_event", event_id="evt_control_test").id
    run_jobs()
    first = run_control_job(outbox_id=outbox_id)
    assert first == "ignored: customer.created concerns no subscription"
    with control_session() as session:
        finished = session.get(ControlOutboxMessage, outbox_id).finished_at
    assert run_control_job(outbox_id=outbox_id) == first
    with control_session() as session:
        assert session.get(ControlOutboxMessage, outbox_id).finished_at == finished


def test_smtp_backend_delivers_to_a_real_smtp_server(app, monkeypatch) -> None:
    """A minimal SMTP server on loopback (RFC 5321 happy path) receives what smtplib sends."""
    import socketserver
    import threading

    received: list[bytes] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(b"220 test ESMTP\r\n")
            while line := self.rfile.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    self.wfile.write(b"250 test\r\n")
                elif verb == b"DATA":
                    self.wfile.write(b"354 go ahead\r\n")
                    body = b""
                    while (chunk := self.rfile.readline()) != b".\r\n":
                        body += chunk
                    received.append(body)
                    self.wfile.write(b"250 queued\r\n")
                elif verb == b"QUIT":
                    self.wfile.write(b"221 bye\r\n")
                    return
                else:  # MAIL FROM, RCPT TO, RSET, NOOP
                    self.wfile.write(b"250 ok\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setitem(app.config, "MAIL_SMTP_HOST", "127.0.0.1")
        monkeypatch.setitem(app.config, "MAIL_SMTP_PORT", server.server_address[1])
        send_mail(to="founder@example.com", subject="Confirm your Batchline sign-up", body="Click the link.")
    finally:
        server.shutdown()
        server.server_close()
    [message] = received
    assert b"To: founder@example.com" in message and b"Click the link." in message
