"""The demo `make run` seeds: the fed-batch template imported and approved by three people's signatures, a 50 L
batch released to the floor; then the whole fed-batch executed through the engine to a completed batch record."""

from __future__ import annotations

from sqlalchemy import select

from app.batches import services
from app.batches.demo import create_demo_people, seed_demo
from app.batches.models import Batch, BatchException
from app.core.tenancy import tenant_transaction
from app.esign.models import Signature
from app.recipes.models import RecipeVersion
from tests.batches.demo_run import execute_demo_steps


def test_the_demo_batch_is_seeded_and_the_fed_batch_runs_end_to_end(make_tenant) -> None:
    tenant = make_tenant(with_defaults=True)  # the recipe_version signature route, as every real tenant has
    people, password = create_demo_people(tenant.ref, domain=f"{tenant.ref.slug}.example.com")
    with tenant_transaction(tenant.ref) as s:
        batch = seed_demo(s, people=people, password=password)
        batch_id = batch.id
    with tenant_transaction(tenant.ref) as s:
        assert seed_demo(s, people=people, password=password) is None  # idempotent
        batch = s.get(Batch, batch_id)
        version = s.get(RecipeVersion, batch.recipe_version_id)
        assert (batch.status, batch.batch_size, version.status, version.template_id) == (
            "dispatched", 50, "approved", "cho-fed-batch-sub50")
        signers = {(sig.meaning, sig.signer_member_id) for sig in s.scalars(
            select(Signature).where(Signature.record_type == "recipe_version",
                                    Signature.record_id == str(version.id)))}
        assert signers == {("authored", people["engineer"].member_id), ("reviewed", people["reviewer"].member_id),
                           ("approved", people["approver"].member_id)}
        lots = {m["code"]: f"{m['code']}-L001" for m in version.document["materials"]}

    steps = execute_demo_steps(tenant.ref, people, password, batch_id, lots)
    with tenant_transaction(tenant.ref, actor=people["supervisor"].actor) as s:
        services.record_output(s, batch_id=batch_id, lot_number="HCCF-000001", quantity="47.5")
        completed = services.complete_batch(s, batch_id=batch_id)
        assert completed.status == "completed"
        raised = {(x.type, x.step_execution_id) for x in s.scalars(
            select(BatchException).where(BatchException.batch_id == batch_id))}
    # Only what a fast test run must raise: conditioning is completed before its four-hour minimum.
    condition = next(st.id for st in steps if st.phase_key == "condition_medium")
    assert raised == {("duration_out_of_range", condition)}
