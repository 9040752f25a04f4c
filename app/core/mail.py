"""Outgoing mail: one small pluggable sender for every area (sign-up verification, invitations, alerts).

Backends, chosen by settings:
- `smtp` when `MAIL_SMTP_HOST` is set (STARTTLS with `MAIL_SMTP_STARTTLS`, login with `MAIL_SMTP_USER`);
- `file` otherwise (the default): each message is written as an `.eml` file under `MAIL_DIR`
  (default `instance/mail/`), which a developer opens and tests read;
- `console` when `MAIL_BACKEND=console`: the message is logged (and written to stderr).
"""

from __future__ import annotations

import logging
import smtplib
import sys
import time
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from flask import Flask, current_app

log = logging.getLogger(__name__)


def _build(app: Flask, *, to: str, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = app.config.get("MAIL_FROM") or "Batchline <no-reply@batchline.invalid>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain="batchline")
    msg.set_content(body)
    return msg


def mail_dir(app: Flask | None = None) -> Path:
    """Directory the file backend writes to."""
    app = app or current_app
    return Path(app.config.get("MAIL_DIR") or Path(app.instance_path) / "mail")


def backend_name(app: Flask | None = None) -> str:
    """The backend in force: smtp when a host is configured, else MAIL_BACKEND (file by default)."""
    app = app or current_app
    if app.config.get("MAIL_SMTP_HOST"):
        return "smtp"
    return app.config.get("MAIL_BACKEND") or "file"


def send_mail(*, to: str, subject: str, body: str, app: Flask | None = None) -> str:
    """Send a plain-text message with the configured backend; return its Message-ID."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    msg = _build(app, to=to, subject=subject, body=body)
    backend = backend_name(app)
    if backend == "smtp":
        host, port = app.config["MAIL_SMTP_HOST"], int(app.config.get("MAIL_SMTP_PORT") or 25)
        with smtplib.SMTP(host, port, timeout=float(app.config.get("MAIL_SMTP_TIMEOUT_S") or 10)) as smtp:
            if app.config.get("MAIL_SMTP_STARTTLS"):
                smtp.starttls()
            if app.config.get("MAIL_SMTP_USER"):
                smtp.login(app.config["MAIL_SMTP_USER"], app.config.get("MAIL_SMTP_PASSWORD") or "")
            smtp.send_message(msg)
    elif backend == "console":
        log.info("mail to %s: %s\n%s", to, subject, body)
        print(f"--- mail to {to}: {subject}\n{body}\n---", file=sys.stderr, flush=True)
    elif backend == "file":
        directory = mail_dir(app)
        directory.mkdir(parents=True, exist_ok=True)
        # Time first so a directory listing sorts in sending order; the uuid keeps names unique.
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        (directory / name).write_bytes(bytes(msg))
    else:
        raise ValueError(f"unknown MAIL_BACKEND {backend!r}: use file, console, or set MAIL_SMTP_HOST")
    return str(msg["Message-ID"])
