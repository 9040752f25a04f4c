"""The EBR of a seeded batch: the JSON and the PDF each contain every entry (superseded ones too), every
correction, signature and exception; the PDF numbers its pages and prints the content hash on each."""

from __future__ import annotations

import io
import json
import re

from pypdf import PdfReader
from sqlalchemy import select

from app.batches import ebr, services
from app.batches.models import StepEntry
from tests.conftest import sign_in


def _seeded(floor) -> int:
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    floor.start(batch_id, "charge")
    lot = floor.lots["MED-T"]
    first = floor.enter(batch_id, "charge", "medium", {"code": f"LOT:{lot}", "quantity": "7.7"},
                        acknowledgement="short bag, topped up below")
    floor.correct(batch_id, first.entry.id, {"code": f"LOT:{lot}", "quantity": "8.02"}, "topped up and re-weighed",
                  action="reweigh")
    floor.enter(batch_id, "charge", "temp", {"value": "38.6"}, acknowledgement="heater overshoot, QA informed")
    floor.sign(batch_id, "charge", "performed")
    floor.complete(batch_id, "charge")
    floor.do_sample(batch_id)
    with floor.tx(floor.supervisor) as s:
        services.record_output(s, batch_id=batch_id, lot_number=f"HARV-{batch_id}", quantity="9.4")
    return batch_id


def test_the_json_and_pdf_exports_hold_every_entry_correction_signature_and_exception(client, make_floor) -> None:
    floor = make_floor()
    batch_id = _seeded(floor)
    with floor.tx() as s:
        entries = s.scalars(select(StepEntry).where(StepEntry.batch_id == batch_id).order_by(StepEntry.id)).all()
        record = ebr.build_record(s, batch_id)
    assert record["content_hash"] == ebr.record_hash(record)

    sign_in(client, floor.operator.email)
    slug = floor.tenant.ref.slug
    exported = json.loads(client.get(f"/t/{slug}/batches/{batch_id}/record.json").data)
    assert exported["content_hash"] == record["content_hash"]  # the same record, whenever it is exported
    assert ebr.record_hash(exported) == exported["content_hash"]
    by_id = {e["id"]: e for step in exported["steps"] for e in step["entries"]}
    assert set(by_id) == {e.id for e in entries}
    medium = [by_id[e.id] for e in entries if e.capture_key == "medium"]
    assert [(m["current"], m["changed_since_first"], m["action"]) for m in medium] == [
        (False, False, "entry"), (True, True, "reweigh")]
    assert medium[1]["reason"] == "topped up and re-weighed" and medium[0]["superseded_by"] == medium[1]["id"]
    signatures = [sig for step in exported["steps"] for sig in step["signatures"]]
    assert {(s["meaning"], s["printed_name"], s["valid"]) for s in signatures} == {
        ("performed", floor.operator.name, True), ("verified", floor.operator2.name, True)}
    assert len(signatures) == 4  # clearance performed + verified, charge performed, sample performed
    types = sorted(x["type"] for x in exported["exceptions"])
    assert types == ["out_of_limit", "quantity_out_of_tolerance", "reweigh"]
    assert exported["control_recipe"]["release_signatures"][0]["printed_name"] == floor.supervisor.name
    assert exported["materials"]["produced"][0]["lot"] == f"HARV-{batch_id}"
    assert exported["yields"]["overall"]["percent"] == 94.0
    assert exported["sensor_trends"] == {"sensors": [], "charts": [], "episodes": []}

    pdf = client.get(f"/t/{slug}/batches/{batch_id}/record.pdf")
    reader = PdfReader(io.BytesIO(pdf.data))
    pages = [page.extract_text() for page in reader.pages]
    text = re.sub(r"\s+", " ", "\n".join(pages))
    flat = re.sub(r"\s+", "", text)
    for n, page in enumerate(pages, start=1):
        assert re.search(rf"Page\s*{n}\s*of\s*{len(pages)}", page), f"page {n} has no page number"
        assert record["content_hash"] in re.sub(r"\s+", "", page), f"page {n} has no content hash"
    for e in entries:
        assert re.sub(r"\s+", "", e.display) in flat, f"entry {e.id} ({e.display}) missing from the PDF"
    assert "toppedupandre-weighed" in flat and "CHANGED" in text
    for sig in signatures:
        assert re.sub(r"\s+", "", sig["manifestation"]) in flat, sig["manifestation"]
    for exc in exported["exceptions"]:
        assert re.sub(r"\s+", "", exc["message"]) in flat, exc["message"]
    assert "heaterovershoot,QAinformed" in flat


def test_the_record_draws_the_sensor_trends_of_the_batch_equipment_with_its_episodes(client, make_floor) -> None:
    import time
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text

    from app.core.tenancy import tenant_transaction
    from app.plant import services as plant
    from app.sensors import services as sensor_services
    from tests.sensors.conftest import burst, readings_json

    floor = make_floor()
    batch_id = floor.new_batch()
    floor.do_clearance(batch_id)
    floor.do_charge(batch_id)  # the charge step is in force: temperature alarm band 36.5-37.5 degC
    tag = f"TT-{floor.reactor_id}"
    with floor.tx() as s:
        plant.create_sensor(s, tag=tag, equipment_id=floor.reactor_id, quantity_kind="temperature", unit="degC",
                            range_low=0, range_high=60, sampling_period_s="0.02")
        start = s.execute(text("SELECT now()")).scalar_one() + timedelta(seconds=0.5)
    wobble = [0.0, 0.01, -0.01, 0.02, -0.02]
    values = ([37.0 + wobble[i % 5] for i in range(20)] + [37.8 + wobble[i % 5] for i in range(15)]
              + [37.0 + wobble[i % 5] for i in range(20)])  # above the alarm limit, inside the hard one
    with tenant_transaction(floor.tenant.ref) as s:
        sensor_services.accept_payload(s, body=readings_json(tag, values, start=start, period_s=0.02), kind="json",
                                       source="t", max_bytes=10**7)
    burst()
    time.sleep(max(0.0, (start + timedelta(seconds=1.2) - datetime.now(UTC)).total_seconds()))  # all in the past
    with floor.tx() as s:
        record = ebr.build_record(s, batch_id)
    (chart,) = record["sensor_trends"]["charts"]
    assert (chart["sensor"], chart["equipment"], chart["in_use"]) == (tag, floor.reactor_tag, True)
    assert sum(b["n"] for b in chart["buckets"]) == len(values)
    assert max(b["max"] for b in chart["buckets"]) == 37.82
    assert chart["limits"]["alarm_high"] == 37.5 and chart["limits"]["high"] == 38.0
    episodes = record["sensor_trends"]["episodes"]
    assert ("limits", "amber") in {(e["rule"], e["severity"]) for e in episodes}
    assert {e["batch_id"] for e in episodes} == {batch_id}
    sign_in(client, floor.operator.email)
    page = client.get(f"/t/{floor.tenant.ref.slug}/batches/{batch_id}/record").get_data(as_text=True)
    assert '<svg class="trend"' in page and "<polyline" in page and f"{tag} (temperature, degC)" in page
    pdf = PdfReader(io.BytesIO(client.get(f"/t/{floor.tenant.ref.slug}/batches/{batch_id}/record.pdf").data))
    assert tag in "".join(p.extract_text() for p in pdf.pages)
