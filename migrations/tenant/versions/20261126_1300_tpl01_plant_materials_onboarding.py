"""Plant, materials and onboarding: sites, lines, equipment (status + logbook), sensors, materials, lots,
movements (genealogy edges), lot dispositions, onboarding progress and data imports.

Revision ID: tpl01
Revises: tacc1
Create Date: 2026-11-26 13:00

The SQL is copied from app/plant/models.py and app/materials/models.py on purpose: a migration is history and
must not change when the model code does.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "tpl01"
down_revision = "tacc1"
branch_labels = None
depends_on = None

FIXED_RECORD_SQL = """
CREATE FUNCTION refuse_fixed_record_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% records are not updated in place', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END
$$
"""

EQUIPMENT_GUARD_SQL = """
CREATE FUNCTION equipment_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.tag, NEW.name, NEW.equipment_class, NEW.line_id, NEW.capacity, NEW.capacity_unit,
      NEW.single_use, NEW.clean_hold_hours, NEW.created_at, NEW.created_by)
     IS DISTINCT FROM
     (OLD.id, OLD.tag, OLD.name, OLD.equipment_class, OLD.line_id, OLD.capacity, OLD.capacity_unit,
      OLD.single_use, OLD.clean_hold_hours, OLD.created_at, OLD.created_by) THEN
    RAISE EXCEPTION 'equipment % master data is not updated in place; only status fields change', OLD.tag
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""

LOT_GUARD_SQL = """
CREATE FUNCTION lot_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.lot_number, NEW.material_id, NEW.supplier, NEW.supplier_lot, NEW.received_on, NEW.quantity,
      NEW.unit, NEW.expiry_date, NEW.retest_date, NEW.produced_by_batch, NEW.created_at, NEW.created_by)
     IS DISTINCT FROM
     (OLD.id, OLD.lot_number, OLD.material_id, OLD.supplier, OLD.supplier_lot, OLD.received_on, OLD.quantity,
      OLD.unit, OLD.expiry_date, OLD.retest_date, OLD.produced_by_batch, OLD.created_at, OLD.created_by) THEN
    RAISE EXCEPTION 'lot % master data is not updated in place', OLD.lot_number
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$
"""

MATERIAL_FIXED_SQL = """
CREATE FUNCTION materials_refuse_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'material % is not updated in place', OLD.code USING ERRCODE = 'insufficient_privilege';
END
$$
"""

TRIGGERS_SQL = [
    'CREATE TRIGGER sites_fixed BEFORE UPDATE ON sites FOR EACH ROW EXECUTE FUNCTION refuse_fixed_record_update()',
    'CREATE TRIGGER lines_fixed BEFORE UPDATE ON lines FOR EACH ROW EXECUTE FUNCTION refuse_fixed_record_update()',
    'CREATE TRIGGER sensors_fixed BEFORE UPDATE ON sensors FOR EACH ROW EXECUTE FUNCTION refuse_fixed_record_update()',
    'CREATE TRIGGER equipment_guard BEFORE UPDATE ON equipment FOR EACH ROW EXECUTE FUNCTION equipment_guard()',
    'CREATE TRIGGER lot_guard BEFORE UPDATE ON lots FOR EACH ROW EXECUTE FUNCTION lot_guard()',
    'CREATE TRIGGER materials_fixed BEFORE UPDATE ON materials FOR EACH ROW EXECUTE FUNCTION materials_refuse_update()',
]

#: GMP records are never deleted (app.audit.registry.gmp_trigger_sql, copied literally).
GMP_TRIGGERS_SQL = [
    "CREATE TRIGGER sites_no_delete BEFORE DELETE ON sites FOR EACH ROW EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER sites_no_truncate BEFORE TRUNCATE ON sites FOR EACH STATEMENT EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER lines_no_delete BEFORE DELETE ON lines FOR EACH ROW EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER lines_no_truncate BEFORE TRUNCATE ON lines FOR EACH STATEMENT EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER equipment_no_delete BEFORE DELETE ON equipment FOR EACH ROW EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER equipment_no_truncate BEFORE TRUNCATE ON equipment FOR EACH STATEMENT EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER equipment_log_no_delete BEFORE DELETE ON equipment_log FOR EACH ROW EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER equipment_log_no_truncate BEFORE TRUNCATE ON equipment_log FOR EACH STATEMENT EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER sensors_no_delete BEFORE DELETE ON sensors FOR EACH ROW EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER sensors_no_truncate BEFORE TRUNCATE ON sensors FOR EACH STATEMENT EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER materials_no_delete BEFORE DELETE ON materials FOR EACH ROW EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER materials_no_truncate BEFORE TRUNCATE ON materials FOR EACH STATEMENT EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER lots_no_delete BEFORE DELETE ON lots FOR EACH ROW EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER lots_no_truncate BEFORE TRUNCATE ON lots FOR EACH STATEMENT EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER lot_movements_no_delete BEFORE DELETE ON lot_movements FOR EACH ROW EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER lot_movements_no_truncate BEFORE TRUNCATE ON lot_movements FOR EACH STATEMENT EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER lot_status_changes_no_delete BEFORE DELETE ON lot_status_changes FOR EACH ROW EXECUTE FUNCTION gmp_refuse_change()",
    "CREATE TRIGGER lot_status_changes_no_truncate BEFORE TRUNCATE ON lot_status_changes FOR EACH STATEMENT EXECUTE FUNCTION gmp_refuse_change()",
]


def upgrade() -> None:
    for statement in [FIXED_RECORD_SQL, EQUIPMENT_GUARD_SQL, LOT_GUARD_SQL, MATERIAL_FIXED_SQL]:
        op.execute(statement)
    op.create_table('data_imports',
        sa.Column('id', sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('filename', sa.String(length=255), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('rows', postgresql.JSONB(), nullable=False),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('created_by', sa.BigInteger(), nullable=True),
        sa.Column('imported_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_count', sa.BigInteger(), nullable=False),
        sa.Column('skipped_count', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint("kind IN ('equipment', 'sensors', 'materials', 'lots')", name=op.f('ck_data_imports_kind')),
        sa.CheckConstraint("state IN ('previewed', 'imported')", name=op.f('ck_data_imports_state')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_data_imports'))
    )
    op.create_table('materials',
        sa.Column('id', sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column('code', sa.String(length=60), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('material_type', sa.String(length=20), nullable=False),
        sa.Column('unit', sa.String(length=20), nullable=False),
        sa.Column('storage_conditions', sa.Text(), nullable=False),
        sa.Column('shelf_life_days', sa.BigInteger(), nullable=True),
        sa.Column('created_by', sa.BigInteger(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint("material_type IN ('consumable', 'intermediate', 'product', 'raw')", name=op.f('ck_materials_material_type')),
        sa.CheckConstraint('shelf_life_days IS NULL OR shelf_life_days > 0', name=op.f('ck_materials_shelf_life_positive')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_materials')),
        sa.UniqueConstraint('code', name=op.f('uq_materials_code'))
    )
    op.create_table('onboarding_steps',
        sa.Column('step', sa.String(length=20), nullable=False),
        sa.Column('skipped', sa.Boolean(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('member_id', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('step', name=op.f('pk_onboarding_steps'))
    )
    op.create_table('sites',
        sa.Column('id', sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column('code', sa.String(length=40), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('address', sa.Text(), nullable=False),
        sa.Column('timezone', sa.String(length=64), nullable=False),
        sa.Column('regulatory_profile', sa.String(length=200), nullable=False),
        sa.Column('signature_routes', postgresql.JSONB(), nullable=False),
        sa.Column('sop_references', postgresql.JSONB(), nullable=False),
        sa.Column('created_by', sa.BigInteger(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sites')),
        sa.UniqueConstraint('code', name=op.f('uq_sites_code'))
    )
    op.create_table('lines',
        sa.Column('id', sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column('site_id', sa.BigInteger(), nullable=False),
        sa.Column('code', sa.String(length=40), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('created_by', sa.BigInteger(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint("kind IN ('area', 'line')", name=op.f('ck_lines_kind')),
        sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_lines_site_id_sites')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_lines')),
        sa.UniqueConstraint('code', name=op.f('uq_lines_code'))
    )
    op.create_index(op.f('ix_lines_site_id'), 'lines', ['site_id'], unique=False)
    op.create_table('lots',
        sa.Column('id', sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column('lot_number', sa.String(length=60), nullable=False),
        sa.Column('material_id', sa.BigInteger(), nullable=False),
        sa.Column('supplier', sa.String(length=200), nullable=False),
        sa.Column('supplier_lot', sa.String(length=100), nullable=False),
        sa.Column('received_on', sa.Date(), nullable=False),
        sa.Column('quantity', sa.Numeric(precision=18, scale=6), nullable=False),
        sa.Column('unit', sa.String(length=20), nullable=False),
        sa.Column('expiry_date', sa.Date(), nullable=True),
        sa.Column('retest_date', sa.Date(), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('status_changed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('balance', sa.Numeric(precision=18, scale=6), nullable=False),
        sa.Column('produced_by_batch', sa.String(length=60), nullable=True),
        sa.Column('created_by', sa.BigInteger(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint("status IN ('quarantine', 'rejected', 'released')", name=op.f('ck_lots_status')),
        sa.CheckConstraint('balance >= 0', name=op.f('ck_lots_balance_not_negative')),
        sa.CheckConstraint('quantity > 0', name=op.f('ck_lots_quantity_positive')),
        sa.ForeignKeyConstraint(['material_id'], ['materials.id'], name=op.f('fk_lots_material_id_materials')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_lots')),
        sa.UniqueConstraint('lot_number', name=op.f('uq_lots_lot_number'))
    )
    op.create_index('ix_lots_material_id', 'lots', ['material_id'], unique=False)
    op.create_table('equipment',
        sa.Column('id', sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column('tag', sa.String(length=60), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('equipment_class', sa.String(length=40), nullable=False),
        sa.Column('line_id', sa.BigInteger(), nullable=False),
        sa.Column('capacity', sa.Numeric(precision=18, scale=6), nullable=True),
        sa.Column('capacity_unit', sa.String(length=20), nullable=False),
        sa.Column('single_use', sa.Boolean(), nullable=False),
        sa.Column('clean_hold_hours', sa.BigInteger(), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('status_changed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('cleaned_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('calibration_due', sa.Date(), nullable=True),
        sa.Column('qualification_status', sa.String(length=20), nullable=False),
        sa.Column('qualified_until', sa.Date(), nullable=True),
        sa.Column('created_by', sa.BigInteger(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint("equipment_class IN ('balance', 'bioreactor', 'bsc', 'centrifuge', 'chromatography_skid', 'filler', 'filter_skid', 'freezer', 'fridge', 'incubator', 'mixer', 'other', 'ph_meter')", name=op.f('ck_equipment_equipment_class')),
        sa.CheckConstraint("qualification_status IN ('in_qualification', 'not_qualified', 'qualified')", name=op.f('ck_equipment_qualification_status')),
        sa.CheckConstraint("status IN ('clean', 'dirty', 'in_use', 'maintenance', 'out_of_service')", name=op.f('ck_equipment_status')),
        sa.CheckConstraint('capacity IS NULL OR capacity > 0', name=op.f('ck_equipment_capacity_positive')),
        sa.CheckConstraint('clean_hold_hours IS NULL OR clean_hold_hours > 0', name=op.f('ck_equipment_clean_hold_positive')),
        sa.ForeignKeyConstraint(['line_id'], ['lines.id'], name=op.f('fk_equipment_line_id_lines')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_equipment')),
        sa.UniqueConstraint('tag', name=op.f('uq_equipment_tag'))
    )
    op.create_index(op.f('ix_equipment_line_id'), 'equipment', ['line_id'], unique=False)
    op.create_table('lot_movements',
        sa.Column('id', sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column('lot_id', sa.BigInteger(), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('quantity', sa.Numeric(precision=18, scale=6), nullable=False),
        sa.Column('balance_after', sa.Numeric(precision=18, scale=6), nullable=False),
        sa.Column('batch_number', sa.String(length=60), nullable=True),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('occurred_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('member_id', sa.BigInteger(), nullable=True),
        sa.Column('actor_label', sa.String(length=300), nullable=False),
        sa.CheckConstraint("(kind = 'consume' AND quantity < 0) OR (kind IN ('receive', 'produce') AND quantity > 0) OR (kind = 'adjust' AND quantity <> 0)", name=op.f('ck_lot_movements_quantity_sign')),
        sa.CheckConstraint("(kind IN ('consume', 'produce')) = (batch_number IS NOT NULL)", name=op.f('ck_lot_movements_batch_link')),
        sa.CheckConstraint("kind IN ('adjust', 'consume', 'produce', 'receive')", name=op.f('ck_lot_movements_kind')),
        sa.CheckConstraint('balance_after >= 0', name=op.f('ck_lot_movements_balance_after_not_negative')),
        sa.ForeignKeyConstraint(['lot_id'], ['lots.id'], name=op.f('fk_lot_movements_lot_id_lots')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_lot_movements'))
    )
    op.create_index('ix_lot_movements_batch_inputs', 'lot_movements', ['batch_number', 'lot_id'], unique=False, postgresql_where=sa.text("kind = 'consume'"))
    op.create_index('ix_lot_movements_batch_outputs', 'lot_movements', ['batch_number', 'lot_id'], unique=False, postgresql_where=sa.text("kind = 'produce'"))
    op.create_index('ix_lot_movements_consumed_by', 'lot_movements', ['lot_id', 'batch_number'], unique=False, postgresql_where=sa.text("kind = 'consume'"))
    op.create_index('ix_lot_movements_lot_id_id', 'lot_movements', ['lot_id', 'id'], unique=False)
    op.create_index('ix_lot_movements_produced_by', 'lot_movements', ['lot_id', 'batch_number'], unique=False, postgresql_where=sa.text("kind = 'produce'"))
    op.create_table('lot_status_changes',
        sa.Column('id', sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column('lot_id', sa.BigInteger(), nullable=False),
        sa.Column('from_status', sa.String(length=20), nullable=False),
        sa.Column('to_status', sa.String(length=20), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('occurred_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('member_id', sa.BigInteger(), nullable=True),
        sa.Column('actor_label', sa.String(length=300), nullable=False),
        sa.Column('signature_id', sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(['lot_id'], ['lots.id'], name=op.f('fk_lot_status_changes_lot_id_lots')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_lot_status_changes'))
    )
    op.create_index('ix_lot_status_changes_lot_id_id', 'lot_status_changes', ['lot_id', 'id'], unique=False)
    op.create_table('equipment_log',
        sa.Column('id', sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column('equipment_id', sa.BigInteger(), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('from_status', sa.String(length=20), nullable=True),
        sa.Column('to_status', sa.String(length=20), nullable=True),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('details', postgresql.JSONB(), nullable=False),
        sa.Column('occurred_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('member_id', sa.BigInteger(), nullable=True),
        sa.Column('actor_label', sa.String(length=300), nullable=False),
        sa.Column('signature_id', sa.BigInteger(), nullable=True),
        sa.CheckConstraint("kind IN ('created', 'status_change', 'calibration', 'qualification', 'note')", name=op.f('ck_equipment_log_kind')),
        sa.ForeignKeyConstraint(['equipment_id'], ['equipment.id'], name=op.f('fk_equipment_log_equipment_id_equipment')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_equipment_log'))
    )
    op.create_index('ix_equipment_log_equipment_id_id', 'equipment_log', ['equipment_id', 'id'], unique=False)
    op.create_table('sensors',
        sa.Column('id', sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column('tag', sa.String(length=80), nullable=False),
        sa.Column('equipment_id', sa.BigInteger(), nullable=False),
        sa.Column('quantity_kind', sa.String(length=60), nullable=False),
        sa.Column('unit', sa.String(length=20), nullable=False),
        sa.Column('range_low', sa.Numeric(precision=18, scale=6), nullable=False),
        sa.Column('range_high', sa.Numeric(precision=18, scale=6), nullable=False),
        sa.Column('sampling_period_s', sa.Numeric(precision=12, scale=3), nullable=False),
        sa.Column('created_by', sa.BigInteger(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint('range_low < range_high', name=op.f('ck_sensors_range_ordered')),
        sa.CheckConstraint('sampling_period_s > 0', name=op.f('ck_sensors_sampling_period_positive')),
        sa.ForeignKeyConstraint(['equipment_id'], ['equipment.id'], name=op.f('fk_sensors_equipment_id_equipment')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sensors')),
        sa.UniqueConstraint('tag', name=op.f('uq_sensors_tag'))
    )
    op.create_index(op.f('ix_sensors_equipment_id'), 'sensors', ['equipment_id'], unique=False)
    for statement in [*TRIGGERS_SQL, *GMP_TRIGGERS_SQL]:
        op.execute(statement)


def downgrade() -> None:
    for table in ["sensors", "equipment_log", "lot_status_changes", "lot_movements", "equipment", "lots", "lines", "sites", "onboarding_steps", "materials", "data_imports"]:
        op.drop_table(table)  # indexes and triggers go with their tables
    for function in ("materials_refuse_update()", "lot_guard()", "equipment_guard()", "refuse_fixed_record_update()"):
        op.execute(f"DROP FUNCTION {function}")
