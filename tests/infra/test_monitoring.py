"""Monitoring objects on Kubernetes, built from whatever `dashboards/` holds when the program runs.

Under Pulumi's mock runtime (no engine, no cluster here); a temporary repository supplies the rule file and
the dashboard, proving the program reads the files rather than a copy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from antenna_infra.config import InfraConfigError
from antenna_infra.monitoring import read_dashboards, read_rule_groups

from tests.infra.harness import Recording, run_program, stack_file


def test_dashboards_become_config_maps_for_the_grafana_sidecar(dev: Recording) -> None:
    dashboard = dev.one("kubernetes:core/v1:ConfigMap", "monitoring-dashboard-antenna-overview")
    assert dashboard.inputs["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard.inputs["data"]["antenna-overview.json"]) == {"title": "Antenna"}


def test_rule_files_become_a_prometheus_rule(dev: Recording) -> None:
    (rule,) = dev.of_type("kubernetes:monitoring.coreos.com/v1:PrometheusRule")
    assert rule.inputs["spec"]["groups"][0]["rules"][0]["alert"] == "GatewayDown"


def test_service_monitor_scrapes_the_gateway_service(dev: Recording) -> None:
    (monitor,) = dev.of_type("kubernetes:monitoring.coreos.com/v1:ServiceMonitor")
    (service,) = dev.of_type("kubernetes:core/v1:Service")
    assert monitor.inputs["spec"]["selector"]["matchLabels"] == service.inputs["metadata"]["labels"]
    assert monitor.inputs["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]


def test_without_prometheus_operator_no_custom_resources(repo_root: Path) -> None:
    config = stack_file("dev")
    config["antenna:monitoring"] = {"prometheus_operator": False, "grafana_dashboards": False}
    rec = run_program(config, repo_root=repo_root)
    (component,) = rec.of_type("antenna:index:Monitoring")
    assert rec.children(component) == []


def test_promtool_test_files_are_not_rules(tmp_path: Path) -> None:
    (tmp_path / "a.rules.yml").write_text("groups:\n- name: a\n  rules: []\n")
    (tmp_path / "a.test.yml").write_text("rule_files: [a.rules.yml]\ntests: []\n")
    assert read_rule_groups(tmp_path) == [{"name": "a", "rules": []}]


def test_a_broken_dashboard_stops_the_program(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InfraConfigError, match=r"broken\.json"):
        read_dashboards(tmp_path)


def test_every_monitoring_object_belongs_to_the_component(dev: Recording) -> None:
    (component,) = dev.of_type("antenna:index:Monitoring")
    assert len(dev.children(component)) == 3
