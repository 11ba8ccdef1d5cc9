"""The OpenAPI document: the checked-in copy matches what the app generates, and schemathesis, calling the
app with valid tokens, finds no 5xx and no response that contradicts the document.

Update the checked-in copy with: ANTENNA_UPDATE_OPENAPI=1 uv run pytest tests/api/test_openapi.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from gateway.app import create_app
from gateway.devmode import PI, seed_demo
from gateway.settings import load_settings
from tests.api.harness import build_app, serve
from tests.support.idp import LoopbackIdP

OPENAPI = Path(__file__).resolve().parents[2] / "gateway" / "api" / "openapi.json"
UPDATE = "ANTENNA_UPDATE_OPENAPI=1 uv run pytest tests/api/test_openapi.py"


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_the_checked_in_openapi_document_is_current(tmp_path: Path) -> None:
    # A production-shaped app (https issuer, no development issuer): the document users get.
    settings = load_settings(None, database={"url": f"sqlite:///{tmp_path / 'antenna.db'}"})
    app = create_app(settings)
    current = render(app.openapi())
    if os.environ.get("ANTENNA_UPDATE_OPENAPI") == "1":
        OPENAPI.write_text(current, encoding="utf-8")
    assert OPENAPI.exists(), f"{OPENAPI.name} is missing; create it with: {UPDATE}"
    assert OPENAPI.read_text(encoding="utf-8") == current, f"the API changed; update {OPENAPI.name} with: {UPDATE}"


# Loaded from the checked-in file at collection: one test per operation, each sent over real HTTP to a
# fresh gateway served by uvicorn.
# A schema-valid job spec can still break the site's own rules (an unknown partition, a time limit over its
# maximum, the quota): the schema cannot know the configured sites, so a 422 there is a correct answer.
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]}}}
)
schema = schemathesis.openapi.from_dict(json.loads(OPENAPI.read_text(encoding="utf-8")), config=CONFIG)


@pytest.fixture
def gateway_url(tmp_path: Path, test_idp: LoopbackIdP) -> Iterator[str]:
    app = build_app(tmp_path, test_idp.issuer)
    seed_demo(app.state.runtime)
    with serve(app) as url:
        yield url


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_the_api_honours_its_document(case: Any, gateway_url: str, test_idp: LoopbackIdP) -> None:
    # The widest-reaching person: PI of the demo project, quota admin and operator.
    token = test_idp.token(
        sub=PI.person,
        myaccessid_cuid=PI.person,
        groups=["/projects/demo", "/projects/demo/pi"],
        realm_access={"roles": ["antenna-quota-admin", "antenna-operator"]},
    )
    case.call_and_validate(base_url=gateway_url, headers={"Authorization": f"Bearer {token}"})
