"""Monitoring on Kubernetes: Grafana dashboards and Prometheus rules from `dashboards/`, and a ServiceMonitor.

Files are read when the program runs; the prometheus-operator objects are made only when the cluster has it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from antenna_infra.config import InfraConfigError
from antenna_infra.config import Monitoring as MonitoringConfig
from antenna_infra.gateway import APP_LABELS

_K8S_NAME = re.compile(r"[^a-z0-9-]+")


def _k8s_name(stem: str) -> str:
    return _K8S_NAME.sub("-", stem.lower()).strip("-")[:50]


def read_rule_groups(directory: Path) -> list[dict[str, Any]]:
    """Every rule group of the `*.yml`/`*.yaml` Prometheus rule files, in file order."""
    groups: list[dict[str, Any]] = []
    if not directory.is_dir():
        return groups
    for path in sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")]):
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise InfraConfigError(f"{path.name}: not YAML: {exc}") from exc
        file_groups = loaded.get("groups") if isinstance(loaded, dict) else None
        if not isinstance(file_groups, list):
            continue  # e.g. promtool unit-test files, which have no `groups`
        groups.extend(file_groups)
    return groups


def read_dashboards(directory: Path) -> dict[str, str]:
    """`{file name: JSON text}` of the generated Grafana dashboards, each checked to be JSON."""
    dashboards: dict[str, str] = {}
    if not directory.is_dir():
        return dashboards
    for path in sorted(directory.glob("*.json")):
        text = path.read_text(encoding="utf-8")
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise InfraConfigError(f"{path.name}: not JSON: {exc}") from exc
        dashboards[path.name] = text
    return dashboards


class Monitoring(pulumi.ComponentResource):
    """Dashboard ConfigMaps (Grafana sidecar label), PrometheusRule and ServiceMonitor."""

    def __init__(
        self,
        name: str,
        config: MonitoringConfig,
        *,
        rules_dir: Path,
        dashboards_dir: Path,
        gateway_namespace: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("antenna:index:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        meta = k8s.meta.v1
        dashboards = read_dashboards(dashboards_dir) if config.grafana_dashboards else {}
        for file_name, text in dashboards.items():
            k8s.core.v1.ConfigMap(
                f"{name}-dashboard-{_k8s_name(Path(file_name).stem)}",
                metadata=meta.ObjectMetaArgs(
                    name=f"antenna-dashboard-{_k8s_name(Path(file_name).stem)}",
                    namespace=config.namespace,
                    # Grafana's dashboard sidecar loads every ConfigMap with this label.
                    labels={**APP_LABELS, "grafana_dashboard": "1"},
                ),
                data={file_name: text},
                opts=child,
            )
        groups = read_rule_groups(rules_dir)
        if config.prometheus_operator:
            k8s.apiextensions.CustomResource(
                f"{name}-service-monitor",
                api_version="monitoring.coreos.com/v1",
                kind="ServiceMonitor",
                metadata=meta.ObjectMetaArgs(name="antenna-gateway", namespace=gateway_namespace, labels=APP_LABELS),
                spec={
                    "selector": {"matchLabels": APP_LABELS},
                    "endpoints": [{"port": "http", "path": "/metrics", "interval": config.scrape_interval}],
                },
                opts=child,
            )
            if groups:
                k8s.apiextensions.CustomResource(
                    f"{name}-rules",
                    api_version="monitoring.coreos.com/v1",
                    kind="PrometheusRule",
                    metadata=meta.ObjectMetaArgs(name="antenna", namespace=config.namespace, labels=APP_LABELS),
                    spec={"groups": groups},
                    opts=child,
                )
        self.register_outputs({"dashboards": sorted(dashboards), "rule_groups": len(groups)})
