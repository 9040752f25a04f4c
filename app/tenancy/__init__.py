"""Tenancy area: the tenant directory in `public`, provisioning of schema + role, fleet migrations.

Owns: `Tenant`, `create_tenant`, `drop_tenant`, `upgrade_all_tenants`, the `batchline tenants` commands.
Does not own: the per-transaction tenant context (that is `app.core.tenancy`, which every area uses).
"""
