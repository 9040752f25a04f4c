"""The pluggable mail sender: file by default, SMTP against a real SMTP server on loopback."""

from __future__ import annotations

import socket

from aiosmtpd.controller import Controller

from app.core.mail import Mail, send_mail


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Collector:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def test_file_backend_writes_an_eml(app, mail_dir) -> None:
    before = set(mail_dir.glob("*.eml"))
    send_mail(Mail(to="qa@example.com", subject="Hello", body="Line one\n"))
    (path,) = set(mail_dir.glob("*.eml")) - before
    text = path.read_text()
    assert "To: qa@example.com" in text and "Subject: Hello" in text and "Line one" in text


def test_smtp_backend_delivers_to_a_real_server(app) -> None:
    handler = _Collector()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    saved = {k: app.config[k] for k in ("MAIL_BACKEND", "SMTP_HOST", "SMTP_PORT", "SMTP_STARTTLS")}
    try:
        app.config.update(MAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=port, SMTP_STARTTLS=False)
        send_mail(Mail(to="admin@example.com", subject="Lockout", body="Account locked\n"))
    finally:
        app.config.update(saved)
        controller.stop()
    ((sender, recipients, content),) = handler.messages
    assert recipients == ["admin@example.com"] and "no-reply@batchline.local" in sender
    assert b"Subject: Lockout" in content and b"Account locked" in content
