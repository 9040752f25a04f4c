"""API credentials for the tests, issued through the real services."""

from __future__ import annotations

import pytest

from app.api import services
from app.core.permissions import BUILTIN_ROLES
from app.core.tenancy import control_session


@pytest.fixture
def issue_token(app):
    """Factory: a personal token of the tenant's admin with the given scopes."""

    def issue(tenant, scopes: list[str] | None = None, **kwargs) -> str:
        with control_session() as session:
            from sqlalchemy import select

            from app.accounts.models import User

            user_id = session.scalar(select(User.id).where(User.email == tenant.admin_email))
            return services.create_personal_token(
                session, tenant_id=tenant.ref.id, user_id=user_id, name="test",
                scopes=scopes or sorted(BUILTIN_ROLES["Admin"]), holder_permissions=BUILTIN_ROLES["Admin"],
                **kwargs).secret

    return issue
