"""Outgoing mail behind one pluggable sender: `console`, `file` (default) or `smtp`.

Plants often run on closed networks without a mail relay, so the default writes each message as an `.eml` file
under `instance/mail/` (and logs where); set `MAIL_BACKEND=smtp` and the `SMTP_*` settings to send for real.
"""

from __future__ import annotations

import itertools
import logging
import os
import smtplib
import ssl
import sys
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from flask import current_app

from app.core.errors import ConfigurationError

log = logging.getLogger(__name__)
_counter = itertools.count(1)


@dataclass(frozen=True)
class Mail:
    """One message to one recipient (plain text: readable on any client, nothing to render)."""

    to: str
    subject: str
    body: str


def _message(config: dict[str, Any], mail: Mail, *, readable: bool) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = config["MAIL_FROM"]
    msg["To"] = mail.to
    msg["Subject"] = mail.subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=config["MAIL_FROM"].rpartition("@")[2] or "batchline.local")
    # Files and the console are read by people who copy links out of them: no quoted-printable line breaks.
    msg.set_content(mail.body, cte="8bit" if readable else None)
    return msg


def _send_console(config: dict[str, Any], msg: EmailMessage) -> None:
    sys.stderr.write(f"----- mail -----\n{msg.as_string()}\n----- end of mail -----\n")
    sys.stderr.flush()


def _send_file(config: dict[str, Any], msg: EmailMessage) -> Path:
    directory = Path(config["MAIL_DIR"] or Path(current_app.instance_path) / "mail")
    directory.mkdir(parents=True, exist_ok=True)
    # Time, pid and a counter: several workers write into one directory without clobbering each other.
    path = directory / f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{next(_counter):04d}.eml"
    path.write_bytes(bytes(msg))
    log.info("mail to %s saved as %s", msg["To"], path)
    return path


def _send_smtp(config: dict[str, Any], msg: EmailMessage) -> None:
    host, port = config["SMTP_HOST"], int(config["SMTP_PORT"])
    if not host:
        raise ConfigurationError("MAIL_BACKEND=smtp needs SMTP_HOST")
    timeout = float(config["SMTP_TIMEOUT_S"])
    if config["SMTP_SSL"]:
        client: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        client = smtplib.SMTP(host, port, timeout=timeout)
    with client:
        if config["SMTP_STARTTLS"] and not config["SMTP_SSL"]:
            client.starttls(context=ssl.create_default_context())
        if config["SMTP_USER"]:
            client.login(config["SMTP_USER"], config["SMTP_PASSWORD"])
        client.send_message(msg)


_BACKENDS = {"console": _send_console, "file": _send_file, "smtp": _send_smtp}


def send_mail(mail: Mail) -> None:
    """Send one message through the configured backend; raise if it cannot be handed over."""
    config = current_app.config
    backend = _BACKENDS.get(config["MAIL_BACKEND"])
    if backend is None:
        raise ConfigurationError(f"MAIL_BACKEND must be one of {sorted(_BACKENDS)}, got {config['MAIL_BACKEND']!r}")
    backend(config, _message(config, mail, readable=config["MAIL_BACKEND"] != "smtp"))
