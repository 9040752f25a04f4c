"""Audit fixtures: a real RFC 3161 TSA on loopback, wired into the app's settings for one test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from tests.support_tsa import LoopbackTSA


@pytest.fixture(scope="session")
def tsa_server() -> Iterator[LoopbackTSA]:
    with LoopbackTSA() as tsa:
        yield tsa


@pytest.fixture
def tsa(app: Flask, tsa_server: LoopbackTSA) -> Iterator[LoopbackTSA]:
    """The loopback TSA as the app's TSA_URL / TSA_CA_FILE for this test."""
    saved = {key: app.config[key] for key in ("TSA_URL", "TSA_CA_FILE")}
    app.config.update(TSA_URL=tsa_server.url, TSA_CA_FILE=tsa_server.ca_file)
    tsa_server.fail = False
    try:
        yield tsa_server
    finally:
        tsa_server.fail = False
        app.config.update(saved)
