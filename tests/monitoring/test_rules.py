"""The Prometheus rules in dashboards/prometheus: promtool accepts them, and their unit tests pass.

promtool is Debian's (Prometheus 2.42), installed by the session fixture; without it these tests fail.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.conftest import PrometheusTools

RULES_DIR = Path(__file__).resolve().parents[2] / "dashboards" / "prometheus"
RULE_FILES = sorted(p for p in RULES_DIR.glob("*.yml"))
TEST_FILES = sorted((RULES_DIR / "tests").glob("*.test.yml"))


def _rules(kind: str) -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if kind in rule
    ]


def _promtool(tools: PrometheusTools, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools.promtool), *map(str, args)], capture_output=True, text=True, check=False, timeout=120
    )


def test_rule_files_pass_promtool_check(prometheus_tools: PrometheusTools) -> None:
    assert RULE_FILES, "no rule files in dashboards/prometheus"
    result = _promtool(prometheus_tools, "check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass(prometheus_tools: PrometheusTools) -> None:
    assert TEST_FILES, "no promtool unit tests in dashboards/prometheus/tests"
    result = _promtool(prometheus_tools, "test", "rules", *TEST_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in _rules("alert")}
    assert len(alerts) >= 15
    assert alerts - firing == set(), "alerts never shown firing in a promtool test"
    assert alerts - quiet == set(), "alerts never shown staying quiet in a promtool test"
    assert (firing | quiet) - alerts == set(), "tests name alerts that do not exist"


def test_the_issue_s_alerts_exist() -> None:
    alerts = {rule["alert"] for rule in _rules("alert")}
    for needed in (
        "AntennaAllocation80Percent",
        "AntennaAllocation95Percent",
        "AntennaAllocationExhausted",
        "AntennaAllocationRunsOutWithinAWeek",
        "AntennaSiteDown",
        "AntennaForwardingBacklogGrowing",
        "AntennaErrorBudgetBurnFast",
        "AntennaErrorBudgetBurnSlow",
        "AntennaVaultTokenNearExpiry",
        "AntennaOverrunBooked",
        "AntennaReconciliationMismatch",
        "AntennaJobsLost",
    ):
        assert needed in alerts


@pytest.mark.parametrize("rule", _rules("alert"), ids=lambda r: r["alert"])
def test_alert_says_who_and_what(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["annotations"]["summary"].strip()


def test_unit_tests_are_kept_out_of_deployed_rule_files() -> None:
    """Ansible deploys dashboards/prometheus/*.yml except names containing "test"; Pulumi keeps files with groups."""
    for path in RULE_FILES:
        assert "test" not in path.name
        assert yaml.safe_load(path.read_text())["groups"]
    for path in TEST_FILES:
        assert "test" in path.name
        assert "groups" not in yaml.safe_load(path.read_text())
