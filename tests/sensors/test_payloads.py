"""The job's JSON parser: the typed fast path sorts readings exactly as the generic parser does."""

from __future__ import annotations

import dataclasses

import msgspec
import numpy as np
import orjson
import pytest

from app.sensors.payloads import _TYPED, ParsedReadings, PayloadError, _generic_json_readings, parse_readings

USUAL = [{"sensor": "TT-1", "ts": "2026-11-02T08:00:00Z", "value": 37.1},
         {"sensor": "TT-2", "ts": "2026-11-02T08:00:00.250000+00:00", "value": 37},
         {"sensor": " TT-3 ", "ts": "2026-11-02T09:00:00+01:00", "value": -1e30, "quality": "Uncertain"},
         {"sensor": "TT-1", "ts": "2026-11-02T08:00:01Z", "value": 36.9, "quality": None, "unit": "C"},
         {"sensor": "", "ts": "not a time", "value": 1.0, "quality": "bad"},
         {"sensor": "TT-1", "ts": "2026-11-02T08:00:02", "value": 1.0, "quality": "excellent"}]
#: Readings the typed form does not take: the generic parser judges the whole payload.
UNUSUAL = [{"sensor": "TT-1", "ts": "2026-11-02T08:00:03Z", "value": None, "quality": "bad"},
           {"sensor": "TT-1", "ts": "2026-11-02T08:00:04Z", "value": "37.0"},
           {"sensor": 7, "ts": "2026-11-02T08:00:05Z", "value": 1.0},
           {"sensor": "TT-1", "ts": "2026-11-02T08:00:06Z", "value": True},
           {"sensor": "TT-1", "value": 1.0}]


def _same(a: ParsedReadings, b: ParsedReadings) -> None:
    for field in dataclasses.fields(ParsedReadings):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), field.name
        else:
            assert list(x) == list(y) if field.name == "tags" else x == y, field.name


@pytest.mark.parametrize("items, typed", [(USUAL, True), (USUAL[:2], True), (USUAL + UNUSUAL, False),
                                          *[([*USUAL[:3], item], False) for item in UNUSUAL]])
def test_the_typed_path_sorts_readings_as_the_generic_parser_does(items: list, typed: bool) -> None:
    body = orjson.dumps({"readings": items, "message_id": "m-1"})
    try:
        _TYPED.decode(body)
        took_typed = True
    except msgspec.DecodeError:
        took_typed = False
    assert took_typed is typed
    _same(parse_readings(body, "json"), _generic_json_readings(ParsedReadings(), body))


@pytest.mark.parametrize("body, message", [
    (b'{"readings": []}', '"readings" is empty'),
    (b'{"readings": [{"sensor": "a", "ts": "2026-11-02T08:00:00Z", "value": 1}], "message_id": 5}', "message_id"),
    (b'{"readings": [{"sensor": "a", "ts": "2026-11-02T08:00:00Z", "value": 1e400}]}', "Number out of range"),
])
def test_both_paths_refuse_a_payload_alike(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_readings(body, "json")
