"""Factories and helpers of the accounts tests: members with given roles, the mailbox, the job worker."""

from __future__ import annotations

import email
import itertools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy import select

from app.accounts.models import Membership, SecurityEvent, User
from app.accounts.passwords import hash_password
from app.core.jobs import QUEUES, redis_connection
from app.core.tenancy import control_session, tenant_transaction
from tests.conftest import TEST_PASSWORD

_people = itertools.count(1)


@dataclass(frozen=True)
class Person:
    """A test account and its membership."""

    user_id: int
    email: str
    membership_id: int | None
    user_code: str
    password: str = TEST_PASSWORD


@pytest.fixture
def make_person(app) -> Callable[..., Person]:
    """Factory: an account with a membership of `tenant` holding `roles` (written straight to the control plane)."""

    def make(tenant: Any, roles: list[str], *, email_: str | None = None, password: str = TEST_PASSWORD,
             name: str = "") -> Person:
        n = next(_people)
        address = email_ or f"person{n}-{os.getpid()}@{tenant.ref.slug}.example.com"
        with control_session() as session:
            user = User(email=address, name=name or f"Person {n}", password_hash=hash_password(password))
            session.add(user)
            session.flush()
            membership = Membership(user_id=user.id, tenant_id=tenant.ref.id, roles=roles)
            session.add(membership)
            session.flush()
            return Person(user.id, address, membership.id, user.user_code, password)

    return make


def admin_of(tenant: Any) -> Person:
    """The tenant's first admin (made by create_tenant)."""
    with control_session() as session:
        user = session.scalar(select(User).where(User.email == tenant.admin_email))
        membership = session.scalar(select(Membership).where(Membership.user_id == user.id,
                                                             Membership.tenant_id == tenant.ref.id))
        return Person(user.id, user.email, membership.id, user.user_code)


def events(tenant: Any, kind: str = "", user_id: int | None = None) -> list[SecurityEvent]:
    """The tenant's security events, oldest first."""
    with tenant_transaction(tenant.ref) as session:
        query = select(SecurityEvent).order_by(SecurityEvent.id)
        if kind:
            query = query.where(SecurityEvent.kind == kind)
        if user_id is not None:
            query = query.where(SecurityEvent.user_id == user_id)
        rows = list(session.scalars(query))
        for row in rows:
            session.expunge(row)
        return rows


def run_jobs() -> None:
    """Run every queued job through a real RQ worker (burst)."""
    SimpleWorker(list(QUEUES), connection=redis_connection(), serializer=JSONSerializer).work(burst=True)


class Mailbox:
    """The .eml files the file mail backend wrote."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.seen = set(directory.glob("*.eml"))

    def new(self) -> list[Message]:
        """Messages written since the fixture started, oldest first."""
        files = sorted(set(self.directory.glob("*.eml")) - self.seen)
        return [email.message_from_bytes(f.read_bytes()) for f in files]

    def to(self, address: str) -> list[Message]:
        """New messages to one address."""
        return [m for m in self.new() if m["To"] == address]

    @staticmethod
    def body(message: Message) -> str:
        """Plain-text body of a message."""
        payload = message.get_payload(decode=True)
        return payload.decode() if isinstance(payload, bytes) else str(message.get_payload())

    def link(self, address: str, pattern: str) -> str:
        """The path of the last link matching `pattern` mailed to `address`."""
        for message in reversed(self.to(address)):
            match = re.search(r"https?://[^/\s]+(" + pattern + r"[^\s]*)", self.body(message))
            if match:
                return match.group(1)
        raise AssertionError(f"no mail to {address} with a link like {pattern}")


@pytest.fixture
def mailbox(mail_dir: Path) -> Mailbox:
    """Read what the app mailed during this test."""
    return Mailbox(mail_dir)


def sign_out(client: Any) -> Any:
    """Sign out through the real form."""
    from tests.conftest import csrf_token

    return client.post("/logout", data={"csrf_token": csrf_token(client, "/account")})
