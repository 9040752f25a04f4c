"""Tenant provisioning time and fleet upgrade time (issue: platform foundation).

Prints bench.provision_tenant_median_s, bench.provision_vs_plain_ddl_ratio (provisioning against creating a
bare schema with the same tables by plain DDL, measured in the same run), bench.upgrade_200_tenants_noop_s and
bench.upgrade_200_tenants_one_migration_s.
"""

from __future__ import annotations

import shutil
import tempfile
import textwrap
from pathlib import Path

from _harness import REPO_ROOT, bench_app, median, report, timed
from alembic.script import ScriptDirectory
from sqlalchemy import text

from app.models import TenantBase
from app.tenancy.migrate import upgrade_all_tenants
from app.tenancy.schema import alembic_config
from app.tenancy.services import create_tenant

FLEET = 200


def main() -> None:
    app = bench_app("tenancy")
    db = app.extensions["batchline.db"]
    with app.app_context():
        samples = [timed(lambda i=i: create_tenant(db, slug=f"prov-{i}", name=f"P{i}",
                                                   admin_email=f"a{i}@prov.example.com",
                                                   admin_password="bench password 123"))
                   for i in range(20)]

        def plain_ddl(i: int) -> None:
            with db.owner.connect() as conn, conn.begin():
                conn.execute(text(f'CREATE SCHEMA "plain_{i}"'))
                conn.execute(text(f'SET LOCAL search_path TO "plain_{i}"'))
                TenantBase.metadata.create_all(conn, checkfirst=False)

        plain = [timed(lambda i=i: plain_ddl(i)) for i in range(20)]
        report("provision_tenant_median_s", median(samples), "s")
        report("provision_vs_plain_ddl_ratio", median(samples) / median(plain), "x")

        for i in range(20, FLEET):
            create_tenant(db, slug=f"prov-{i}", name=f"P{i}", admin_email=f"a{i}@prov.example.com",
                          admin_password="bench password 123")
        report("upgrade_200_tenants_noop_s", timed(lambda: upgrade_all_tenants(db, jobs=4)), "s")

        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp) / "tenant"
            shutil.copytree(REPO_ROOT / "migrations" / "tenant", directory)
            head = ScriptDirectory.from_config(alembic_config("tenant")).get_current_head()
            (directory / "versions" / "20991231_2359_tbench_trivial.py").write_text(textwrap.dedent(f'''
                """Bench-only trivial revision."""
                from alembic import op

                revision = "tbench"
                down_revision = "{head}"
                branch_labels = None
                depends_on = None


                def upgrade() -> None:
                    op.execute("COMMENT ON TABLE outbox IS 'jobs waiting for commit'")


                def downgrade() -> None:
                    op.execute("COMMENT ON TABLE outbox IS NULL")
            '''))
            result = {}
            seconds = timed(lambda: result.update(r=upgrade_all_tenants(db, jobs=4, migrations_dir=str(directory))))
            if len(result["r"].upgraded) != FLEET:
                raise SystemExit(f"upgrade failed: {result['r'].failed}")
            report("upgrade_200_tenants_one_migration_s", seconds, "s")
    db.dispose()


if __name__ == "__main__":
    main()
