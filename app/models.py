"""Import every area's models so both metadata trees are complete (migrations, schema builds, tests).

Add a line here when an area gains a `models.py`.
"""

from app.accounts import models as accounts_models
from app.api import models as api_models
from app.audit import models as audit_models
from app.batches import models as batches_models
from app.billing import models as billing_models
from app.core import jobs as core_jobs
from app.core.db import PublicBase, TenantBase
from app.esign import models as esign_models
from app.materials import models as materials_models
from app.onboarding import models as onboarding_models
from app.plant import models as plant_models
from app.recipes import models as recipes_models
from app.review import models as review_models
from app.sensors import models as sensors_models
from app.signup import models as signup_models
from app.tenancy import models as tenancy_models

__all__ = [
    "PublicBase", "TenantBase", "accounts_models", "api_models", "audit_models", "batches_models", "billing_models",
    "core_jobs", "esign_models", "materials_models", "onboarding_models", "plant_models", "recipes_models",
    "review_models", "sensors_models", "signup_models", "tenancy_models",
]
