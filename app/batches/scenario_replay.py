"""Replay a template's verification scenarios against the real batch engine.

`app.recipes.scenarios` runs each scenario of a validation pack with a pure evaluator; this module runs the same
scenario through the batch services a tablet uses — plan and release a batch of the approved template version,
then, record by record, start (with a supervisor's signed override where the scenario gives one), record every
entry (scans resolve real lots and equipment), correct values entered again, sign (performed / verified, with
each person's own password), complete or skip — and reads back what the engine did: the `batch_exceptions` it
raised and the actions it refused. Both speak the scenario vocabulary, so the outcome is compared with the
scenario's expectation by the same `Outcome.mismatches`.

Times: a scenario gives offsets from the batch start. The engine reads the clock once per step action
(`execution._load`); the replay sets `session.info[execution.REPLAY_CLOCK]` to the batch start plus the
record's offset (entries and the start at `started_at`, signatures and completion at `completed_at`), so hold
times, durations and late entries are judged on the scenario's times. Audit events and signatures keep the
database's own time. A record without times continues on the last time set.

What a scenario does not say, the replay supplies the way a floor would, and says so in the record: a red value
or unacceptable choice is acknowledged with a comment naming the scenario; a value entered again for a capture
already recorded is a correction with a reason; a batch the scenario ends early is aborted (completion is refused
while a mandatory step is missing). Equipment is fresh per batch (clean, qualified); lots are received and
released once per tenant. The people are a `ReplayCast` the caller provides (members of the tenant whose shared
password the replay re-enters at each signature), so nothing signs without a real password check.

Replays write real batch records: run them in a tenant kept for validation, never in a production tenant.
"""

from __future__ import annotations

import itertools
import mimetypes
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.batches import catalog, execution, services
from app.batches.demo import acting
from app.batches.errors import IncompatibleUnit, OverrideRequired, SecondPersonRequired, StepRefused
from app.batches.models import StepExecution
from app.core.errors import Conflict, NotFound, ValidationError
from app.core.tenancy import Actor, TenantRef, tenant_transaction
from app.recipes.document import (
    AttachmentCapture,
    RecipeDocument,
    TimestampCapture,
    parse_document,
    parse_duration,
)
from app.recipes.scenarios import (
    EquipmentScanEntry,
    ExceptionType,
    Finding,
    MaterialScanEntry,
    NumberEntry,
    Outcome,
    Scenario,
    StepRecord,
)

#: The exception types both implementations speak; the engine's own (data_correction, late_entry...) are kept
#: apart as `Replay.engine_only`.
VOCABULARY = frozenset(ExceptionType.__args__)  # type: ignore[attr-defined]
#: Lot-gate and equipment-gate block codes, as scenario refusals.
BLOCK_REFUSALS = {"wrong_material": "wrong_material", "wrong_equipment": "wrong_equipment",
                  "not_assigned": "wrong_equipment"}
#: A lot large enough for every scenario of a pack.
LOT_QUANTITY = "1000000"


class Person(Protocol):
    """A member of the tenant: what signing and acting need."""

    user_id: int
    member_id: int
    email: str

    @property
    def actor(self) -> Actor: ...


@dataclass(frozen=True)
class ReplayCast:
    """The people of a replay, members of its tenant sharing one password.

    Scenario signer ids (`op.anna.meyer`...) are given operators in order of first appearance, so two ids are
    always two people; the supervisor plans, releases and signs overrides; engineer, reviewer and approver sign
    the template version's route.
    """

    password: str
    operators: tuple[Person, ...]
    supervisor: Person
    engineer: Person
    reviewer: Person
    approver: Person


@dataclass(frozen=True)
class ReplayTemplate:
    """A template version approved in the tenant, ready for batches."""

    template_id: str
    master_recipe_id: int
    version_id: int
    document: RecipeDocument
    line_id: int


@dataclass
class Replay:
    """What the engine did with one scenario."""

    scenario_id: str
    batch_id: int
    batch_number: str
    outcome: Outcome
    #: Exceptions the engine raised beyond the scenario vocabulary (corrections, overrides...), as (type, step).
    engine_only: list[tuple[str, str | None]] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when the engine produced exactly the scenario's expected outcome."""
        return not self.mismatches


_seq = itertools.count(1)


@contextmanager
def _acting(tenant: TenantRef, person: Person, clock: datetime | None = None) -> Iterator[Session]:
    with tenant_transaction(tenant, actor=person.actor) as session:
        if clock is not None:
            session.info[execution.REPLAY_CLOCK] = clock
        yield session


def _credentials(person: Person, password: str) -> dict[str, Any]:
    return {"user_id": person.user_id, "password": password, "identification": person.email,
            "identification_required": True}


# ---------------------------------------------------------------------------------------------------------------
# The template in the tenant


def _effective_import(session: Session, template_id: str) -> Any:
    """The tenant's effective version of an earlier import of this template, unchanged, if there is one."""
    from app.recipes import services as recipes
    from app.recipes.models import MasterRecipe
    from app.recipes.templates import TEMPLATES_DIR, read_index

    indexed = next(e for e in read_index(TEMPLATES_DIR)["templates"] if e["id"] == template_id)
    now = session.execute(text("SELECT now()")).scalar_one()
    for master_id in session.scalars(select(MasterRecipe.id).where(MasterRecipe.template_id == template_id)):
        try:
            version = recipes.effective_version(session, master_id, now)
        except NotFound:
            continue
        if version.content_hash == indexed["recipe_content_hash"]:
            return version
    return None


def prepare_template(tenant: TenantRef, *, template_id: str, cast: ReplayCast) -> ReplayTemplate:
    """Import a library template and sign it through its route (authored, reviewed, approved) — or reuse the
    tenant's effective, unchanged import of it — and make a line for the replay's batches."""
    from app.plant import services as plant
    from app.recipes import services as recipes

    with _acting(tenant, cast.engineer) as session:
        version = _effective_import(session, template_id)
        approved = version is not None
        if version is None:
            version = recipes.import_template(session, template_id=template_id, create_missing_materials=True,
                                              change_reason="validation-pack replay")
        version_id, master_recipe_id = version.id, version.master_recipe_id
        if not approved:
            recipes.sign_version(session, version_id=version_id, meaning="authored",
                                 **_credentials(cast.engineer, cast.password))
    for person, meaning in (() if approved else ((cast.reviewer, "reviewed"), (cast.approver, "approved"))):
        with _acting(tenant, person) as session:
            recipes.sign_version(session, version_id=version_id, meaning=meaning,
                                 **_credentials(person, cast.password))
    code = f"VAL-{secrets.token_hex(3).upper()}"
    with _acting(tenant, cast.supervisor) as session:
        stored = recipes.get_version(session, version_id)
        document = parse_document(stored.document)
        site = plant.create_site(session, code=code, name=f"Validation site {code}", timezone="UTC",
                                 regulatory_profile="validation-pack replay")
        line = plant.create_line(session, site_id=site.id, code=code, name=f"Validation line {code}")
        return ReplayTemplate(template_id=template_id, master_recipe_id=master_recipe_id, version_id=version_id,
                              document=document, line_id=line.id)


# ---------------------------------------------------------------------------------------------------------------
# Plant and lots a scenario scans


def _plant_class(recipe_class: str) -> str:
    return catalog.plant_class_for(recipe_class) or "other"


def _equipment(session: Session, *, line_id: int, tag: str, recipe_class: str) -> Any:
    from app.plant import services as plant

    return plant.create_equipment(session, tag=tag, name=f"{recipe_class} for validation", line_id=line_id,
                                  equipment_class=_plant_class(recipe_class), status="clean",
                                  qualification_status="qualified",
                                  calibration_due=(datetime.now(UTC) + timedelta(days=365)).date().isoformat())


def _lot(session: Session, cast: ReplayCast, entry: MaterialScanEntry, lots: dict[str, str]) -> str:
    """The lot number a scan reads: the scenario's lot, received and released once per tenant."""
    from app.materials import services as materials
    from app.materials.models import Lot, Material

    if entry.lot in lots:
        return lots[entry.lot]
    material = session.scalar(select(Material).where(Material.code == entry.material))
    if material is None:  # a material the scenario scans by mistake (wrong_material cases)
        material = materials.create_material(session, code=entry.material, name=entry.material,
                                             material_type="raw", unit=entry.unit or "ea")
    lot = session.scalar(select(Lot).where(Lot.lot_number == entry.lot))
    if lot is None:
        lot = materials.receive_lot(session, material_id=material.id, lot_number=entry.lot, quantity=LOT_QUANTITY,
                                    received_on=datetime.now(UTC).date().isoformat(), supplier="Validation",
                                    expiry_date=(datetime.now(UTC) + timedelta(days=3650)).date().isoformat())
        with acting(session, cast.approver):
            materials.change_lot_status(session, lot_id=lot.id, to_status="released",
                                        reason="released for the validation-pack replay",
                                        credentials=_credentials(cast.approver, cast.password))
    lots[entry.lot] = lot.lot_number
    return lot.lot_number


def _scanned_equipment(scenario: Scenario) -> list[EquipmentScanEntry]:
    seen: dict[str, EquipmentScanEntry] = {}
    for rec in scenario.records:
        for entry in rec.entries.values():
            if isinstance(entry, EquipmentScanEntry):
                seen.setdefault(entry.equipment_id, entry)
    return list(seen.values())


# ---------------------------------------------------------------------------------------------------------------
# One scenario


@dataclass
class _Run:
    tenant: TenantRef
    template: ReplayTemplate
    scenario: Scenario
    cast: ReplayCast
    lots: dict[str, str]
    batch_id: int = 0
    batch_number: str = ""
    control_hash: str = ""
    start: datetime = field(default_factory=lambda: datetime.now(UTC))
    clock: datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)
    refusals: list[Finding] = field(default_factory=list)

    def person(self, signer_id: str) -> Person:
        if signer_id not in self.people:
            if len(self.people) >= len(self.cast.operators):
                raise ValueError(f"{self.scenario.id}: more signers than the cast has operators")
            self.people[signer_id] = self.cast.operators[len(self.people)]
        return self.people[signer_id]

    def refuse(self, code: str, step: str, message: str, capture: str | None = None) -> None:
        self.refusals.append(Finding(code, step, capture, None, message))

    def at(self, offset: timedelta | None) -> datetime | None:
        if offset is not None:
            self.clock = self.start + offset
        return self.clock


def replay_scenario(tenant: TenantRef, *, template: ReplayTemplate, scenario: Scenario, cast: ReplayCast,
                    lots: dict[str, str] | None = None) -> Replay:
    """Plan and release a batch, play the scenario's records through the batch services, compare the outcome."""
    run = _Run(tenant=tenant, template=template, scenario=scenario, cast=cast, lots=lots if lots is not None else {})
    _plan_and_release(run)
    for rec in scenario.records:
        if rec.action == "skip":
            _skip(run, rec)
        else:
            _execute(run, rec)
    if scenario.complete_batch:
        _end_batch(run)
    return _outcome(run)


def _plan_and_release(run: _Run) -> None:
    doc, cast = run.template.document, run.cast
    n = secrets.token_hex(3).upper()  # equipment tags stay unique across runs in one tenant
    size = run.scenario.batch_size or doc.header.batch_size
    with _acting(run.tenant, cast.supervisor) as session:
        scanned = _scanned_equipment(run.scenario)
        equipment: dict[str, int] = {}
        for entry in scanned:
            item = _equipment(session, line_id=run.template.line_id, tag=f"{entry.equipment_id}-{n}"[:60],
                              recipe_class=entry.equipment_class)
            run.tags[entry.equipment_id] = item.tag
            equipment.setdefault(entry.equipment_class, item.id)
        chosen = {}
        for requirement in services.equipment_requirements(doc):
            if requirement not in equipment:
                equipment[requirement] = _equipment(session, line_id=run.template.line_id,
                                                    tag=f"{requirement}-{n}"[:60], recipe_class=requirement).id
            chosen[requirement] = equipment[requirement]
        for rec in run.scenario.records:
            for entry in rec.entries.values():
                if isinstance(entry, MaterialScanEntry):
                    _lot(session, cast, entry, run.lots)
        batch = services.plan_batch(session, master_recipe_id=run.template.master_recipe_id,
                                    batch_size=repr(float(size.value)), unit=size.unit, line_id=run.template.line_id,
                                    planned_start=datetime.now(UTC), equipment=chosen,
                                    identity=dict(run.scenario.identity))
        control = services.dispatch_batch(session, batch_id=batch.id, actor=cast.supervisor.actor,
                                          reason=f"validation scenario {run.scenario.id}",
                                          **_credentials(cast.supervisor, cast.password))
        run.batch_id, run.batch_number, run.control_hash = batch.id, batch.batch_number, control.content_hash
        run.steps = {s.phase_key: s.id for s in session.scalars(
            select(StepExecution).where(StepExecution.batch_id == batch.id))}
        run.start = session.execute(text("SELECT now()")).scalar_one()
        run.clock = run.start


#: What the engine answers when it refuses a step action (nothing was recorded).
REFUSALS = (StepRefused, OverrideRequired, execution.AcknowledgementRequired, SecondPersonRequired,
            ValidationError, Conflict)


def _attempt(run: _Run, person: Person, clock: datetime | None, action: Callable[[Session], Any]) -> Exception | None:
    """Run one step action in its own tenant transaction, as a tablet request does; return the refusal, if any."""
    try:
        with _acting(run.tenant, person, clock) as session:
            action(session)
    except REFUSALS as exc:
        return exc
    return None


def _refused(run: _Run, step: str, exc: Exception, capture: str | None = None) -> None:
    """Note an engine refusal in the scenario vocabulary."""
    if isinstance(exc, StepRefused):
        for key in exc.captures or (capture,):
            run.refuse(exc.code, step, str(exc), key)
    elif isinstance(exc, OverrideRequired):
        codes = [str(b.get("code")) for b in exc.check.get("blocks", []) if b.get("override", True)]
        code = next((BLOCK_REFUSALS.get(c, c) for c in codes if c in BLOCK_REFUSALS or c == "out_of_order"),
                    ",".join(codes))
        run.refuse(code, step, str(exc), capture)
    elif isinstance(exc, SecondPersonRequired):
        run.refuse("second_person_required", step, str(exc))
    elif isinstance(exc, IncompatibleUnit):
        run.refuse("incompatible_unit", step, str(exc), capture)
    elif isinstance(exc, ValidationError):
        run.refuse("invalid_entry", step, str(exc), capture)
    else:  # a refusal the vocabulary has no word for: it shows as a mismatch
        run.refuse(type(exc).__name__, step, str(exc), capture)


def _skip(run: _Run, rec: StepRecord) -> None:
    reason = rec.reason or f"skipped in validation scenario {run.scenario.id}"
    refused = _attempt(run, run.cast.operators[0], run.clock, lambda s: execution.skip_step(
        s, batch_id=run.batch_id, step_id=run.steps[rec.step], reason=reason))
    if refused is not None:
        _refused(run, rec.step, refused)


def _performer(run: _Run, rec: StepRecord) -> Person:
    """Who records the entries of a record: whoever signs it 'performed', else its first signer."""
    signer = next((s.by for s in rec.signatures if s.meaning == "performed"), None) or \
        next((s.by for s in rec.signatures), None)
    return run.person(signer) if signer else run.cast.operators[0]


def _start(run: _Run, rec: StepRecord, session: Session) -> None:
    step_id = run.steps[rec.step]
    if session.scalar(select(StepExecution.status).where(StepExecution.id == step_id)) == "in_progress":
        return  # a later record of a step left open continues it
    override = execution.OverrideRequest(email=run.cast.supervisor.email, password=run.cast.password,
                                         reason=rec.override) if rec.override else None
    execution.start_step(session, batch_id=run.batch_id, step_id=step_id, override=override)


def _sign(run: _Run, step_id: int, meaning: str, signer: Person) -> Callable[[Session], Any]:
    def sign(session: Session) -> Any:
        as_signer = services.member_signer(run.tenant, user_id=signer.user_id, actor=signer.actor,
                                           email=signer.email)
        return execution.sign_step(session, batch_id=run.batch_id, step_id=step_id, meaning=meaning,
                                   password=run.cast.password, signer=as_signer, identification=signer.email,
                                   identification_required=True)
    return sign


def _execute(run: _Run, rec: StepRecord) -> None:
    step_id, operator = run.steps[rec.step], _performer(run, rec)
    clock = run.at(rec.started_at)
    refused = _attempt(run, operator, clock, lambda s: _start(run, rec, s))
    if refused is not None:
        _refused(run, rec.step, refused)
        return
    for cap_key, entry in rec.entries.items():
        _enter(run, rec, step_id, cap_key, entry, operator, clock)
    clock = run.at(rec.completed_at)
    for sig in rec.signatures:
        refused = _attempt(run, run.person(sig.by), clock, _sign(run, step_id, sig.meaning, run.person(sig.by)))
        if isinstance(refused, StepRefused):
            _refused(run, rec.step, refused)
            return  # a signature attests complete data: nothing more of this record happens
        if refused is not None:
            _refused(run, rec.step, refused)
    if rec.complete:
        refused = _attempt(run, operator, clock, lambda s: execution.complete_step(
            s, batch_id=run.batch_id, step_id=step_id))
        if refused is not None:
            _refused(run, rec.step, refused)


def _raw(run: _Run, capture: Any, entry: Any) -> tuple[dict[str, Any], tuple[str, str, bytes] | None]:
    """The tablet's submission for a scenario entry (and the file of an attachment)."""
    if isinstance(entry, NumberEntry):
        return {"value": repr(entry.value), "unit": entry.unit}, None
    if isinstance(entry, MaterialScanEntry):
        raw: dict[str, Any] = {"code": f"LOT:{run.lots[entry.lot]}"}
        if entry.quantity is not None:
            raw.update(quantity=repr(entry.quantity), unit=entry.unit)
        return raw, None
    if isinstance(entry, EquipmentScanEntry):
        return {"code": f"EQ:{run.tags[entry.equipment_id]}"}, None
    if isinstance(capture, AttachmentCapture):
        content_type = mimetypes.guess_type(str(entry))[0] or "application/octet-stream"
        if capture.accept and content_type not in capture.accept:
            content_type = capture.accept[0]
        data = b"%PDF-1.4\n% validation-pack replay\n" if content_type == "application/pdf" else \
            f"validation-pack replay: {entry}\n".encode()
        return {}, (str(entry), content_type, data)
    if isinstance(capture, TimestampCapture):
        return {"value": (run.start + parse_duration(entry)).isoformat()}, None
    return {"value": entry}, None


def _enter(run: _Run, rec: StepRecord, step_id: int, cap_key: str, entry: Any, operator: Person,
           clock: datetime | None) -> None:
    """Record one entry (a correction when the capture already has a value), acknowledging when asked to."""
    phase = run.template.document.phase_map()[rec.step]
    capture = next((c for c in phase.captures if c.key == cap_key), None)
    if capture is None:
        raise ValueError(f"{run.scenario.id}: step {rec.step!r} has no capture {cap_key!r}")
    raw, upload = _raw(run, capture, entry)

    def record(session: Session, ack: str | None) -> None:
        existing = execution.current_entries(session, step_id, cap_key).get(cap_key)
        common: dict[str, Any] = {"batch_id": run.batch_id, "raw": raw, "upload": upload,
                                  "idempotency_key": f"val{next(_seq):08d}x{run.batch_id}",
                                  "control_recipe_hash": run.control_hash, "acknowledgement": ack}
        if existing is None:
            execution.record_entry(session, step_id=step_id, capture_key=cap_key, **common)
        else:
            execution.correct_entry(session, entry_id=existing.id, **common,
                                    reason=f"entered again in validation scenario {run.scenario.id}")

    refused = _attempt(run, operator, clock, lambda s: record(s, None))
    if isinstance(refused, execution.AcknowledgementRequired):
        ack = f"acknowledged by the operator (validation scenario {run.scenario.id})"
        refused = _attempt(run, operator, clock, lambda s: record(s, ack))
    if refused is not None:
        _refused(run, rec.step, refused, cap_key)


def _end_batch(run: _Run) -> None:
    """Complete the batch; when the engine refuses (a mandatory step missing), end it the only way left: abort."""
    refused = _attempt(run, run.cast.supervisor, run.clock,
                       lambda s: services.complete_batch(s, batch_id=run.batch_id))
    if refused is not None:
        with _acting(run.tenant, run.cast.supervisor, run.clock) as session:
            services.abort_batch(session, batch_id=run.batch_id,
                                 reason=f"validation scenario {run.scenario.id} ends the batch here")


#: Exception types that belong to a step, not to one of its entries.
STEP_LEVEL = frozenset({"out_of_order", "hold_time_exceeded", "duration_out_of_range", "missing_mandatory_step"})


def _outcome(run: _Run) -> Replay:
    with _acting(run.tenant, run.cast.supervisor) as session:
        rows = session.execute(text(
            "SELECT e.type, e.severity, st.phase_key, e.capture_key, e.message FROM batch_exceptions e "
            "LEFT JOIN step_executions st ON st.id = e.step_execution_id WHERE e.batch_id = :b ORDER BY e.id"),
            {"b": run.batch_id}).all()
    outcome = Outcome(refusals=list(run.refusals))
    engine_only: list[tuple[str, str | None]] = []
    for type_, severity, step, capture, message in rows:
        if type_ not in VOCABULARY:
            engine_only.append((type_, step))
            continue
        outcome.exceptions.append(Finding(type_, step or "", None if type_ in STEP_LEVEL else capture, severity,
                                          message))
    replay = Replay(scenario_id=run.scenario.id, batch_id=run.batch_id, batch_number=run.batch_number,
                    outcome=outcome, engine_only=engine_only)
    replay.mismatches = outcome.mismatches(run.scenario.expect)
    return replay


def replay_pack(tenant: TenantRef, *, template_id: str, cast: ReplayCast,
                progress: Callable[[Replay], None] | None = None) -> list[Replay]:
    """Prepare a template in the tenant and replay every scenario of its validation pack (one batch each)."""
    from app.recipes.services import find_template

    template, _ = find_template(template_id)
    prepared = prepare_template(tenant, template_id=template_id, cast=cast)
    lots: dict[str, str] = {}
    out = []
    for scenario in template.pack.scenarios:
        replay = replay_scenario(tenant, template=prepared, scenario=scenario, cast=cast, lots=lots)
        if progress is not None:
            progress(replay)
        out.append(replay)
    return out


@dataclass(frozen=True)
class _CastMember:
    user_id: int
    member_id: int
    email: str
    name: str

    @property
    def actor(self) -> Actor:
        return Actor(member_id=self.member_id, label=f"{self.name} <{self.email}>", request_id="validation-replay")


#: (roles, name) of a temporary replay cast.
CAST_ROLES = ((("Operator",), "Validation operator A"), (("Operator",), "Validation operator B"),
              (("Operator",), "Validation operator C"), (("Supervisor",), "Validation supervisor"),
              (("Process Engineer",), "Validation engineer"), (("Process Engineer",), "Validation reviewer"),
              (("QA",), "Validation QA"))


@contextmanager
def temporary_cast(tenant: TenantRef) -> Iterator[ReplayCast]:
    """Accounts made for one replay run, members of the tenant with a random password no one is told; their
    memberships are deactivated when the run ends (the accounts stay, as the signatures name them)."""
    from app.accounts.models import Membership, User
    from app.accounts.passwords import hash_password
    from app.core.tenancy import control_session

    password = secrets.token_urlsafe(24)
    password_hash = hash_password(password)
    run = secrets.token_hex(4)
    people: list[_CastMember] = []
    with control_session() as cp:
        for roles, name in CAST_ROLES:
            email = f"replay-{run}-{name.split()[-1].lower()}@{tenant.slug}.validation.invalid"
            user = User(email=email, name=f"{name} ({run})", password_hash=password_hash)
            cp.add(user)
            cp.flush()
            member = Membership(user_id=user.id, tenant_id=tenant.id, roles=list(roles))
            cp.add(member)
            cp.flush()
            people.append(_CastMember(user.id, member.id, email, user.name))
    try:
        yield ReplayCast(password=password, operators=tuple(people[:3]), supervisor=people[3], engineer=people[4],
                         reviewer=people[5], approver=people[6])
    finally:
        with control_session() as cp:
            for person in people:
                member = cp.get(Membership, person.member_id)
                if member is not None:
                    member.active = False


def replay_for_report(tenant: TenantRef, *, template_ids: list[str] | None = None,
                      progress: Callable[[str, Replay], None] | None = None) -> list[dict[str, Any]]:
    """Replay every scenario of the library (or of the given templates) through the engine in this tenant, with a
    temporary cast; return the results as the validation report stores them."""
    from app.recipes.services import library_templates

    chosen = [t for t in library_templates() if template_ids is None or t.id in template_ids]
    out = []
    with temporary_cast(tenant) as cast:
        for template in chosen:
            def note(replay: Replay, template_id: str = template.id) -> None:
                if progress is not None:
                    progress(template_id, replay)
            replays = replay_pack(tenant, template_id=template.id, cast=cast, progress=note)
            out.append({"template_id": template.id, "version": template.version,
                        "passed": all(r.passed for r in replays),
                        "scenarios": [{"scenario": r.scenario_id, "status": "passed" if r.passed else "failed",
                                       "batch_number": r.batch_number, "details": r.mismatches,
                                       "engine_only": sorted({t for t, _ in r.engine_only})} for r in replays]})
    return out


__all__ = ["Replay", "ReplayCast", "ReplayTemplate", "prepare_template", "replay_for_report", "replay_pack",
           "replay_scenario", "temporary_cast"]
