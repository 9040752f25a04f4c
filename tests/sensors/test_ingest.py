"""Ingest path: payload stored, readings COPYed once, bad readings reported, partitions by month."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from app.core.jobs import OutboxMessage
from app.core.tenancy import tenant_transaction
from app.sensors import services
from app.sensors.analysis import LAG
from app.sensors.jobs import process_ingest
from app.sensors.models import SensorAnalysisState, SensorIngest, SensorReading
from app.sensors.payloads import PayloadError
from tests.sensors.conftest import T0, burst, readings_json

MAX = 10 * 1024 * 1024


def _accept(plant, body: bytes, kind: str = "json", source: str = "client:test") -> int:
    with tenant_transaction(plant.ref) as session:
        return services.accept_payload(session, body=body, kind=kind, source=source, max_bytes=MAX).ingest.id


def _ingest(plant, ingest_id: int) -> dict:
    with tenant_transaction(plant.ref) as session:
        return services.ingest_summary(session.get(SensorIngest, ingest_id))


def _count(plant, sensor_id: int | None = None) -> int:
    with tenant_transaction(plant.ref) as session:
        query = select(func.count()).select_from(SensorReading)
        if sensor_id is not None:
            query = query.where(SensorReading.sensor_id == sensor_id)
        return session.scalar(query)


def test_payload_is_stored_then_loaded_by_the_worker_and_analysed(app, make_plant) -> None:
    plant = make_plant()
    ingest_id = _accept(plant, readings_json(plant.tag("TT"), [37.0 + 0.01 * (i % 7) for i in range(50)]))
    assert _ingest(plant, ingest_id)["status"] == "queued"
    assert _count(plant) == 0
    burst()
    doc = _ingest(plant, ingest_id)
    assert doc["status"] == "processed"
    assert doc["readings"] == {"total": 50, "stored": 50, "duplicate": 0, "rejected": 0}
    assert _count(plant, plant.sensors["TT"]) == 50
    with tenant_transaction(plant.ref) as session:
        funcs = dict(session.execute(select(OutboxMessage.func, OutboxMessage.finished_at)).all())
        assert funcs["app.sensors.jobs:process_ingest"] is not None
        # Analysed by the ingest job itself from the readings in hand: all but the last LAG readings (their
        # spike window needs later readings) are judged, and no analysis job had to read them back.
        state = session.get(SensorAnalysisState, plant.sensors["TT"])
        assert state.n_seen == 50 - LAG and state.cursor_ts == T0 + timedelta(seconds=50 - LAG - 1)
        assert "app.sensors.jobs:analyse_sensors" not in funcs
        # Readings of November 2026 went to their own monthly partition, not the default one.
        parts = dict(session.execute(text(
            "SELECT tableoid::regclass::text, count(*) FROM sensor_readings GROUP BY 1")).all())
    assert parts == {"sensor_readings_p2026_11": 50}


def test_unknown_sensors_and_bad_values_are_reported_never_silently_dropped(app, make_plant) -> None:
    plant = make_plant()
    body = json.dumps({"readings": [
        {"sensor": plant.tag("TT"), "ts": "2026-11-02T08:00:00Z", "value": 37.1},
        {"sensor": "NO-SUCH-TAG", "ts": "2026-11-02T08:00:00Z", "value": 1.0},
        {"sensor": plant.tag("TT"), "ts": "2026-11-02T08:00:01Z", "value": "hot"},
        {"sensor": plant.tag("TT"), "ts": "2026-11-02 08:00:02", "value": 37.2},
        {"sensor": plant.tag("PH"), "ts": "2026-11-02T09:00:00+01:00", "value": 7.0, "quality": "meh"},
        {"sensor": plant.tag("PH"), "ts": "2026-11-02T09:00:01+01:00", "value": 7.01, "quality": "uncertain"},
    ]}).encode()
    ingest_id = _accept(plant, body)
    burst()
    doc = _ingest(plant, ingest_id)
    assert doc["readings"] == {"total": 6, "stored": 2, "duplicate": 0, "rejected": 4}
    reasons = {e["index"]: e["reason"] for e in doc["errors"]}
    assert reasons[1].startswith("unknown sensor tag")
    assert reasons[2] .startswith("value is not a finite number")
    assert "UTC offset" in reasons[3]
    assert "quality" in reasons[4]
    assert sum(doc["error_counts"].values()) == 4
    with tenant_transaction(plant.ref) as session:
        ph = session.execute(select(SensorReading.ts, SensorReading.quality)
                             .where(SensorReading.sensor_id == plant.sensors["PH"])).one()
    assert ph.ts.isoformat() == "2026-11-02T08:00:01+00:00" and ph.quality == 1


def test_processing_twice_and_overlapping_payloads_store_each_reading_once(app, make_plant) -> None:
    plant = make_plant()
    tag = plant.tag("TT")
    first = _accept(plant, readings_json(tag, [37.0] * 10 + [37.1] * 10))
    burst()
    # A gateway resends an overlapping window without a message id: the overlap is stored once.
    second = _accept(plant, readings_json(tag, [37.1] * 10 + [37.2] * 10, start=T0.replace(second=10)))
    burst()
    assert _ingest(plant, second)["readings"] == {"total": 20, "stored": 10, "duplicate": 10, "rejected": 0}
    assert _count(plant, plant.sensors["TT"]) == 30
    # Reprocessing a payload (as a retried job would, had its transaction committed nothing) changes nothing.
    with tenant_transaction(plant.ref) as session:
        session.get(SensorIngest, first).status = "queued"
    with tenant_transaction(plant.ref) as session:
        summary = process_ingest(session, ingest_id=first)
    assert summary["readings"]["stored"] == 0 and summary["readings"]["duplicate"] == 20
    assert _count(plant, plant.sensors["TT"]) == 30
    # Duplicates inside one payload are stored once too.
    dup = json.dumps({"readings": [{"sensor": tag, "ts": "2026-11-03T00:00:00Z", "value": 1.0}] * 3}).encode()
    third = _accept(plant, dup)
    burst()
    assert _ingest(plant, third)["readings"] == {"total": 3, "stored": 1, "duplicate": 2, "rejected": 0}


def test_coverage_buckets_kept_by_the_loader_are_those_of_the_stored_readings(app, make_plant) -> None:
    """The ingest job folds what it stores into the review's coverage buckets: the same rows as the buckets'
    SQL definition over the table, through a resend (the duplicate path), readings of bad quality or without a
    value, sub-second stamps on slice boundaries, and a person's payload (manual)."""
    from app.sensors.models import BUCKET_ROWS_SQL

    plant = make_plant()
    tag = plant.tag("TT")
    quality = ["good", "bad", "uncertain", "good"] * 50
    values: list = [37.0 + 0.01 * (i % 5) for i in range(200)]
    values[1::8] = [None] * len(values[1::8])  # bad quality without a value
    _accept(plant, readings_json(tag, values, period_s=0.9375, quality=quality))  # a slice of a minute apart
    burst()
    # A resend overlapping the first payload (the slow, duplicate path), then a person's entries.
    resend = _accept(plant, readings_json(tag, [36.5] * 150, start=T0 + timedelta(seconds=90), period_s=0.9375))
    _accept(plant, readings_json(tag, [36.9] * 5, start=T0 + timedelta(seconds=1000)), source="member:1:token:1")
    burst()
    assert _ingest(plant, resend)["readings"]["duplicate"] == 104
    columns = "sensor_id, batch_key, bucket_start, bucket_s, n, bad, manual, first_ts, last_ts, first_good, " \
              "last_good, slots"
    with tenant_transaction(plant.ref) as session:
        kept = session.execute(text(f"SELECT {columns} FROM sensor_reading_buckets ORDER BY 1, 2, 3")).all()
        derived = session.execute(text(f"SELECT * FROM ({BUCKET_ROWS_SQL.format(source='sensor_readings')}) b "
                                       "ORDER BY 1, 2, 3")).all()
        stored = session.scalar(text("SELECT count(*) FROM sensor_readings"))
    assert [tuple(r) for r in kept] == [tuple(r) for r in derived]
    assert sum(r.n for r in kept) == stored and any(r.manual for r in kept) and any(r.bad for r in kept)


def test_the_buckets_function_refuses_what_cannot_be_a_bucket(app, make_plant) -> None:
    plant = make_plant()
    good = {"sensor_id": plant.sensors["TT"], "batch_key": 0, "bucket_start": "2026-11-02T08:00:00Z", "n": 2,
            "bad": 0, "manual": False, "first_ts": "2026-11-02T08:00:01Z", "last_ts": "2026-11-02T08:00:59Z",
            "first_good": "2026-11-02T08:00:01Z", "last_good": "2026-11-02T08:00:59Z", "slots": 3}
    wrong = [{"bucket_start": "2026-11-02T08:00:30Z"}, {"n": 0}, {"bad": 3}, {"last_ts": "2026-11-02T08:01:00Z"},
             {"first_good": None}, {"slots": 0}, {"bad": 2}, {"manual": None}]
    for change in wrong:
        with pytest.raises(Exception, match="not a coverage bucket"), tenant_transaction(plant.ref) as session:
            session.execute(text("SELECT sensor_reading_buckets_add(CAST(:r AS jsonb))"),
                            {"r": json.dumps([good, {**good, **change}])})
    with tenant_transaction(plant.ref) as session:
        assert session.scalar(text("SELECT count(*) FROM sensor_reading_buckets")) == 0
        session.execute(text("SELECT sensor_reading_buckets_add(CAST(:r AS jsonb))"), {"r": json.dumps([good])})
        assert session.scalar(text("SELECT n FROM sensor_reading_buckets")) == 2
        with pytest.raises(Exception, match="permission denied"):
            session.execute(text("INSERT INTO sensor_reading_buckets (sensor_id, batch_key, bucket_start, bucket_s, n, "
                                 "bad, manual, first_ts, last_ts, slots) VALUES (1, 0, now(), 60, 1, 0, false, now(), "
                                 "now(), 0)"))


def test_repeated_message_id_is_accepted_once(app, make_plant) -> None:
    plant = make_plant()
    body = readings_json(plant.tag("TT"), [37.0, 37.1], message_id="gw-7-000123")
    with tenant_transaction(plant.ref) as session:
        first = services.accept_payload(session, body=body, kind="json", source="client:gw7", max_bytes=MAX)
    with tenant_transaction(plant.ref) as session:
        again = services.accept_payload(session, body=body, kind="json", source="client:gw7", max_bytes=MAX)
    assert not first.duplicate and again.duplicate and again.ingest.id == first.ingest.id
    with tenant_transaction(plant.ref) as session:
        assert session.scalar(select(func.count()).select_from(SensorIngest)) == 1
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 1


def test_csv_payload_with_and_without_header(app, make_plant) -> None:
    plant = make_plant()
    tt, ph = plant.tag("TT"), plant.tag("PH")
    body = (f"sensor,ts,value,quality\n{tt},2026-11-02T08:00:00Z,37.0,good\n{tt},2026-11-02T08:00:01Z,37.1,\n"
            f"{ph},2026-11-02T08:00:00Z,7.0,bad\n{ph},2026-11-02T08:00:01Z,NaN,good\n").encode()
    ingest_id = _accept(plant, body, kind="csv")
    bare = _accept(plant, f"{tt},2026-11-02T08:00:02Z,37.2\n".encode(), kind="csv")
    burst()
    doc = _ingest(plant, ingest_id)
    assert doc["readings"] == {"total": 4, "stored": 3, "duplicate": 0, "rejected": 1}
    assert doc["errors"][0]["reason"] .startswith("value is not a finite number")
    assert _ingest(plant, bare)["readings"]["stored"] == 1


@pytest.mark.parametrize(("body", "kind", "message"), [
    (b"", "json", "empty"),
    (b"{not json", "json", "not valid JSON"),
    (b'{"values": []}', "json", '"readings" list'),
    (b'{"readings": []}', "json", "empty"),
    (b'{"readings": [{}], "message_id": 7}', "json", "message_id"),
    (b'{"readings": [{}], "message_id": ""}', "json", "message_id"),
    (b'[{"sensor": "TT"}]', "json", '"readings" list'),
    (b'{"readings": {"sensor": "TT"}}', "json", '"readings" list'),
    (b'{"readings": [{"sensor": "TT"}, 3]}', "json", "every item"),
    (b'{"readings": [{"sensor": "TT"}]', "json", "not valid JSON"),
    (b"a,b\n", "csv", "sensor,ts,value"),
    (b"\xff\xfe", "csv", "UTF-8"),
])
def test_a_malformed_envelope_is_refused_and_nothing_is_stored(app, make_plant, body, kind, message) -> None:
    plant = make_plant()
    with pytest.raises(PayloadError, match=message):
        _accept(plant, body, kind=kind)
    with tenant_transaction(plant.ref) as session:
        assert session.scalar(select(func.count()).select_from(SensorIngest)) == 0


def test_a_number_beyond_double_range_fails_the_ingest_with_the_reason(app, make_plant) -> None:
    """The envelope check does not read the readings; the job's parser refuses the document and says why, and
    the payload stays stored."""
    plant = make_plant()
    ingest_id = _accept(plant, b'{"readings": [{"sensor": "TT", "ts": "2026-11-02T08:00:00Z", "value": 1e400}]}')
    burst()
    doc = _ingest(plant, ingest_id)
    assert doc["status"] == "failed" and "cannot be read: Number out of range" in doc["failure"]
    assert _count(plant) == 0


def test_payloads_are_stored_compressed_and_read_back_exactly_as_received(app, make_plant) -> None:
    plant = make_plant()
    body = readings_json(plant.tag("TT"), [37.0 + 0.01 * (i % 7) for i in range(400)])
    ingest_id = _accept(plant, body)
    with tenant_transaction(plant.ref) as session:
        stored, encoding, size = session.execute(text(
            "SELECT payload, payload_encoding, size_bytes FROM sensor_ingests WHERE id = :i"), {"i": ingest_id}).one()
        assert encoding == "zstd" and size == len(body) and len(stored) < len(body) // 4
        assert services.stored_payload(session, ingest_id) == body
        # Stored out of line as it came: the server does not compress it a second time.
        assert session.scalar(text("SELECT attstorage FROM pg_attribute WHERE attrelid = 'sensor_ingests'::regclass "
                                   "AND attname = 'payload'")) == "e"
    burst()
    assert _ingest(plant, ingest_id)["readings"]["stored"] == 400


def test_a_payload_stored_uncompressed_before_still_processes(app, make_plant) -> None:
    """Rows stored before payloads were compressed have encoding `identity`: the job reads them as they are."""
    plant = make_plant()
    body = readings_json(plant.tag("TT"), [37.0] * 20)
    with tenant_transaction(plant.ref) as session:
        ingest_id = session.scalar(text(
            "INSERT INTO sensor_ingests (source, content_type, payload, size_bytes, status) "
            "VALUES ('client:old', 'json', :p, :n, 'queued') RETURNING id"), {"p": body, "n": len(body)})
        assert session.get(SensorIngest, ingest_id).payload_encoding == "identity"
        services.process_ingest(session, ingest_id=ingest_id)
    assert _ingest(plant, ingest_id)["readings"]["stored"] == 20


def test_a_damaged_stored_payload_fails_the_ingest_and_says_so(app, make_plant) -> None:
    plant = make_plant()
    frame = bytearray(services.compress_payload(readings_json(plant.tag("TT"), [37.0] * 20)))
    frame[len(frame) // 2] ^= 0xFF  # one flipped byte: the frame's checksum no longer matches
    with tenant_transaction(plant.ref) as session:
        ingest_id = session.scalar(text(
            "INSERT INTO sensor_ingests (source, content_type, payload, payload_encoding, size_bytes, status) "
            "VALUES ('client:disk', 'json', :p, 'zstd', 999, 'queued') RETURNING id"), {"p": bytes(frame)})
        services.process_ingest(session, ingest_id=ingest_id)
    doc = _ingest(plant, ingest_id)
    assert doc["status"] == "failed" and "stored payload is damaged" in doc["failure"]
    assert _count(plant) == 0


def test_a_late_partition_takes_over_readings_parked_in_the_default_partition(app, make_plant, db) -> None:
    plant = make_plant()
    # Readings of a month with no partition (inserted directly, as a failed partition job would leave them).
    with tenant_transaction(plant.ref) as session:
        session.execute(text("INSERT INTO sensor_readings (sensor_id, ts, value, quality, ingest_id) "
                             "VALUES (:s, '2025-01-15T00:00:00Z', 1.0, 0, 0)"), {"s": plant.sensors["TT"]})
        assert session.scalar(text("SELECT tableoid::regclass::text FROM sensor_readings")) == \
            "sensor_readings_default"
    with tenant_transaction(plant.ref) as session:
        assert services.ensure_partitions(session, {T0.date().replace(year=2025, month=1, day=1)}) == \
            ["sensor_readings_p2025_01"]
    with tenant_transaction(plant.ref) as session:
        assert session.scalar(text("SELECT tableoid::regclass::text FROM sensor_readings")) == \
            "sensor_readings_p2025_01"
        # The tenant role reaches partitions only through the parent: no grant on the partition itself.
        with pytest.raises(Exception, match="permission denied"):
            session.execute(text("SELECT count(*) FROM sensor_readings_p2025_01"))


def _summary(plant, ingest_id: int) -> dict:
    with tenant_transaction(plant.ref) as session:
        return process_ingest(session, ingest_id=ingest_id)


def test_payloads_queued_behind_are_processed_together_each_with_its_own_counts(app, make_plant) -> None:
    """A job finding later payloads of its source already queued (a backlog) processes them with its own: one COPY
    and one analysis pass, but each payload keeps its own refusals, duplicates and status, and their jobs then
    find them processed. Another source's payload waits for its own job."""
    plant = make_plant()
    tt = plant.tag("TT")
    first_body = json.loads(readings_json(tt, [37.0] * 20))
    first_body["readings"].insert(3, {"sensor": "NO-SUCH-TAG", "ts": "2026-11-02T08:00:00Z", "value": 1.0})
    first = _accept(plant, json.dumps(first_body).encode())
    # Overlaps the first payload's last ten readings: stored once, by the earlier payload.
    overlapping = _accept(plant, readings_json(tt, [37.2] * 20, start=T0 + timedelta(seconds=10)))
    unreadable = _accept(plant, b'{"readings": [{"sensor": "TT", "ts": "2026-11-02T08:00:00Z", "value": 1e400}]}')
    other_sensor = _accept(plant, readings_json(plant.tag("PH"), [7.0] * 15))
    elsewhere = _accept(plant, readings_json(plant.tag("DO"), [40.0] * 5), source="client:elsewhere")

    summary = _summary(plant, first)
    assert summary["readings"] == {"total": 21, "stored": 20, "duplicate": 0, "rejected": 1}
    assert _ingest(plant, first)["errors"] == [{"index": 3, "sensor": "NO-SUCH-TAG",
                                  "reason": "unknown sensor tag: register it in Plant > Sensors"}]
    assert _ingest(plant, overlapping)["readings"] == {"total": 20, "stored": 10, "duplicate": 10, "rejected": 0}
    assert _ingest(plant, unreadable)["status"] == "failed"
    assert "Number out of range" in _ingest(plant, unreadable)["failure"]
    assert _ingest(plant, other_sensor)["readings"] == {"total": 15, "stored": 15, "duplicate": 0, "rejected": 0}
    assert _ingest(plant, elsewhere)["status"] == "queued"
    assert _count(plant, plant.sensors["TT"]) == 30 and _count(plant, plant.sensors["PH"]) == 15
    with tenant_transaction(plant.ref) as session:
        # The earlier payload's values where both carried a reading.
        assert session.scalar(select(func.count()).where(SensorReading.sensor_id == plant.sensors["TT"],
                                                         SensorReading.value == 37.0)) == 20
        assert session.scalar(select(SensorReading.ingest_id).where(
            SensorReading.sensor_id == plant.sensors["TT"], SensorReading.ts == T0 + timedelta(seconds=29))) \
            == overlapping
        # Analysed as one stream per sensor (duplicates were met, so read back from the table).
        assert session.get(SensorAnalysisState, plant.sensors["TT"]).n_seen == 30 - LAG
        assert session.get(SensorAnalysisState, plant.sensors["PH"]).n_seen == 15 - LAG
    # Their own jobs change nothing and answer their ingest.
    assert _summary(plant, overlapping)["readings"]["stored"] == 10
    assert _summary(plant, other_sensor)["status"] == "processed"
    assert _count(plant) == 45
    burst()
    assert _ingest(plant, elsewhere)["readings"]["stored"] == 5


def test_a_payload_that_breaks_its_group_is_left_to_its_own_job(app, make_plant, db) -> None:
    """If processing a group fails for something other than an unreadable payload, the job processes its own
    payload (and earlier ones) alone; the payload at fault fails in its own job, and the others go on."""
    plant = make_plant()
    tt = plant.tag("TT")
    first = _accept(plant, readings_json(tt, [37.0] * 20))
    faulty = _accept(plant, readings_json(tt, [37.0] * 20, start=T0 + timedelta(seconds=20)))
    last = _accept(plant, readings_json(tt, [37.0] * 20, start=T0 + timedelta(seconds=40)))
    # A fault the database raises for one payload's rows (as a failing constraint or disk would).
    with db.owner.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path TO "{plant.ref.schema}"'))
        conn.execute(text("CREATE FUNCTION refuse_faulty() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                          f"IF NEW.ingest_id = {faulty} THEN RAISE EXCEPTION 'disk on fire'; END IF; "
                          "RETURN NEW; END $$"))
        conn.execute(text("CREATE TRIGGER refuse_faulty BEFORE INSERT ON sensor_readings "
                          "FOR EACH ROW EXECUTE FUNCTION refuse_faulty()"))
    assert _summary(plant, first)["readings"]["stored"] == 20
    assert _ingest(plant, faulty)["status"] == "queued" and _ingest(plant, last)["status"] == "queued"
    # The last payload's job meets the faulty one first (earlier, still queued): it fails alone, the last goes on.
    assert _summary(plant, last)["readings"]["stored"] == 20
    assert _ingest(plant, faulty)["status"] == "queued"
    with pytest.raises(Exception, match="disk on fire"):
        _summary(plant, faulty)
    assert _count(plant) == 40


@pytest.mark.parametrize(("queued", "ingest_id", "groups"), [
    # Later payloads join while the group stays under the byte cap.
    ([(1, 5), (2, 5), (3, 5), (4, 5)], 2, [[1, 2, 3]]),
    # Every earlier payload is processed first, in groups under the cap, whatever their size.
    ([(1, 12), (2, 12), (3, 1), (4, 1)], 3, [[1], [2, 3, 4]]),
    ([(1, 20), (2, 1)], 2, [[1], [2]]),
    # No later payload when the job's own group is full.
    ([(1, 16), (2, 1)], 1, [[1]]),
])
def test_groups_keep_order_and_caps(queued, ingest_id, groups) -> None:
    mb = services.BATCH_MAX_BYTES // 16
    assert services._groups([(i, size * mb) for i, size in queued], ingest_id) == groups


def test_groups_cap_the_number_of_payloads() -> None:
    queued = [(i, 1) for i in range(1, 41)]
    groups = services._groups(queued, 20)
    assert groups == [list(range(1, 17)), list(range(17, 33))]


def test_a_payload_across_months_lands_in_each_month_partition(app, make_plant) -> None:
    plant = make_plant()
    tag = plant.tag("TT")
    stamps = ["2026-11-30T23:59:58Z", "2026-11-30T23:59:59Z", "2026-12-01T00:00:00Z", "2027-02-03T10:00:00Z"]
    ingest_id = _accept(plant, json.dumps({"readings": [{"sensor": tag, "ts": ts, "value": 37.0}
                                                        for ts in stamps]}).encode())
    burst()
    assert _ingest(plant, ingest_id)["readings"]["stored"] == 4
    with tenant_transaction(plant.ref) as session:
        parts = dict(session.execute(text(
            "SELECT tableoid::regclass::text, count(*) FROM sensor_readings GROUP BY 1")).all())
    # Only the months that have readings get a partition (none for January 2027).
    assert parts == {"sensor_readings_p2026_11": 2, "sensor_readings_p2026_12": 1, "sensor_readings_p2027_02": 1}
