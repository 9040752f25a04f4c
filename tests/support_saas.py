"""Helpers of the sign-up, billing and API tests (real Redis workers, real mail files)."""

from __future__ import annotations

import email
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import Flask
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from werkzeug.serving import make_server

from app.core.jobs import QUEUES, redis_connection

LINK_RE = re.compile(r"https?://[^\s]+/signup/verify/[A-Za-z0-9._-]+")


def run_jobs() -> None:
    """Run every queued job with a real RQ worker in burst mode."""
    SimpleWorker(list(QUEUES), connection=redis_connection(), serializer=JSONSerializer).work(burst=True)


def mails(directory: Path) -> list[email.message.Message]:
    """Messages the file mail backend wrote, oldest first."""
    if not directory.exists():
        return []
    return [email.message_from_bytes(p.read_bytes()) for p in sorted(directory.glob("*.eml"))]


def last_verification_link(directory: Path, to: str) -> str:
    """The verification link of the newest mail to `to`."""
    for msg in reversed(mails(directory)):
        if msg["To"] == to:
            match = LINK_RE.search(msg.get_payload(decode=True).decode())
            assert match, "no verification link in the mail"
            return match.group(0)
    raise AssertionError(f"no mail to {to}")


@contextmanager
def live_server(app: Flask) -> Iterator[str]:
    """Serve the app over real HTTP on a free loopback port, in a thread; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()
