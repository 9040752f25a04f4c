"""Recipes: give tenants that existed before recipes the default recipe_version signature route.

Revision ID: trc02
Revises: trc01
Create Date: 2026-11-27 10:10

New tenants get it from the provisioning hook (tenants/defaults/signature_routes.json); this seeds the same
route, copied here as history, into schemas that have no active route for recipe versions yet, with its audit
event. Downgrade leaves it: signature routes are GMP records and are never deleted.
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "trc02"
down_revision = "trc01"
branch_labels = None
depends_on = None

STEPS = [
    {"meaning": "authored", "roles": ["Process Engineer", "Admin"], "status": "in_review"},
    {"meaning": "reviewed", "roles": ["Process Engineer", "QA"], "status": "reviewed"},
    {"meaning": "approved", "roles": ["QA"], "status": "approved"},
]

SEED_SQL = """
WITH ins AS (
  INSERT INTO signature_routes (record_type, version, steps, allow_same_signer, pending_status, active)
  SELECT 'recipe_version',
         coalesce((SELECT max(version) FROM signature_routes WHERE record_type = 'recipe_version'), 0) + 1,
         CAST(:steps AS jsonb), false, 'draft', true
  WHERE NOT EXISTS (SELECT 1 FROM signature_routes WHERE record_type = 'recipe_version' AND active)
  RETURNING id, version, steps
)
INSERT INTO audit_events (actor_label, action, record_type, record_id, new_values, reason)
SELECT 'system', 'create', 'signature_route', CAST(id AS text),
       jsonb_build_object('record_type', 'recipe_version', 'version', version, 'steps', steps,
                          'allow_same_signer', false, 'pending_status', 'draft'),
       'default recipe_version route seeded by migration trc02'
FROM ins
"""


def upgrade() -> None:
    op.get_bind().execute(sa.text(SEED_SQL), {"steps": json.dumps(STEPS)})


def downgrade() -> None:
    pass  # the route stays: GMP records are never deleted (a later route version can replace it)
