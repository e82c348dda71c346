"""Schemathesis against the service's own OpenAPI document: generated requests for every operation,
with every check (no 5xx, statuses and bodies as documented, content types, response schemas, auth,
unsupported methods, schema-violating data rejected) but one: ``positive_data_acceptance``, which
expects every schema-valid request to succeed. Routing has constraints a schema cannot state (a
``max_cost_usd`` no model fits, a capability no model has, a decision id never issued): those are 422s
or 404s naming the reason, and tested as such in ``test_api.py``."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from test_e2e import Server

from banditroute import __version__
from banditroute.http.routes import openapi_document

TOKEN = "fuzz-token"
schema = schemathesis.openapi.from_dict(openapi_document(__version__))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("fuzz"), token=TOKEN).start()
    yield srv
    srv.stop()


@schema.exclude(path="/export").parametrize()  # a binary file; its contract is tested in test_api.py
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_its_documented_contract(case, server):
    case.call_and_validate(base_url=f"http://127.0.0.1:{server.port}", headers={"Authorization": f"Bearer {TOKEN}"},
                           excluded_checks=[positive_data_acceptance])
