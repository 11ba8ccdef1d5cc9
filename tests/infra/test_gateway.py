"""The gateway's Kubernetes objects the program declares, and the configuration file it mounts.

No Kubernetes cluster or Pulumi engine runs here: the program runs under Pulumi's mock runtime (offline) and
these tests read the objects it would send. The generated configuration file is loaded with the gateway's
own settings loader, so a file the gateway would refuse fails here.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway.settings import load_settings
from tests.infra.harness import Recording, run_program, stack_file

DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def pod(rec: Recording) -> dict:
    (deployment,) = rec.of_type(DEPLOYMENT)
    return deployment.inputs["spec"]["template"]


def container(rec: Recording) -> dict:
    (only,) = pod(rec)["spec"]["containers"]
    return only


def test_the_component_declares_the_whole_deployment_shape(dev: Recording) -> None:
    (component,) = dev.of_type("antenna:index:Gateway")
    kinds = sorted(r.type.split(":")[-1] for r in dev.children(component))
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Namespace",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]


def test_at_least_two_replicas_rolled_without_downtime(dev: Recording, prod: Recording) -> None:
    for rec, replicas in ((dev, 2), (prod, 3)):
        (deployment,) = rec.of_type(DEPLOYMENT)
        spec = deployment.inputs["spec"]
        assert spec["replicas"] == replicas
        assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


def test_probes_hit_healthz_and_readyz(dev: Recording) -> None:
    c = container(dev)
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_resource_requests_and_limits(dev: Recording, prod: Recording) -> None:
    assert container(dev)["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    assert container(prod)["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}


def test_runs_as_non_root_with_a_read_only_root_filesystem(dev: Recording) -> None:
    sc = container(dev)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod(dev)["spec"]["securityContext"]["runAsNonRoot"] is True
    # With a read-only root, /tmp must be the pod's own volume.
    mounts = {m["mountPath"]: m for m in container(dev)["volumeMounts"]}
    assert mounts["/etc/antenna"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod(dev)["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_namespace_enforces_the_restricted_pod_security_standard(dev: Recording) -> None:
    (namespace,) = dev.of_type("kubernetes:core/v1:Namespace")
    assert namespace.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_prometheus_scrape_annotations(dev: Recording) -> None:
    annotations = pod(dev)["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8000"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_service_pdb_and_autoscaler_target_the_gateway(dev: Recording) -> None:
    labels = pod(dev)["metadata"]["labels"]
    (service,) = dev.of_type("kubernetes:core/v1:Service")
    assert service.inputs["spec"]["selector"] == labels
    assert service.inputs["spec"]["ports"][0]["targetPort"] == "http"
    (pdb,) = dev.of_type("kubernetes:policy/v1:PodDisruptionBudget")
    assert pdb.inputs["spec"]["minAvailable"] == 1
    assert pdb.inputs["spec"]["selector"]["matchLabels"] == labels
    (hpa,) = dev.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    assert hpa.inputs["spec"]["minReplicas"] == 2
    assert hpa.inputs["spec"]["maxReplicas"] == 3
    assert hpa.inputs["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "antenna-gateway",
    }


def test_network_policy_admits_only_the_ingress_and_monitoring_namespaces(dev: Recording) -> None:
    (policy,) = dev.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    spec = policy.inputs["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = spec["ingress"]
    sources = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in rule["from"]}
    assert sources == {"ingress-nginx", "monitoring"}
    assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]
    blocks = [peer["ipBlock"] for r in spec["egress"] for peer in r["to"] if "ipBlock" in peer]
    assert blocks == [{"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}]


def test_configuration_file_is_a_config_map_mounted_where_antenna_config_points(dev: Recording) -> None:
    config_map = dev.one("kubernetes:core/v1:ConfigMap", "gateway-config")
    env = {e["name"]: e["value"] for e in container(dev)["env"]}
    assert env["ANTENNA_CONFIG"] == "/etc/antenna/antenna.yaml"
    volumes = {v["name"]: v for v in pod(dev)["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map.inputs["metadata"]["name"]
    assert list(config_map.inputs["data"]) == ["antenna.yaml"]


def test_the_gateway_accepts_the_generated_configuration(dev: Recording, prod: Recording, tmp_path: Path) -> None:
    for rec in (dev, prod):
        config_map = rec.one("kubernetes:core/v1:ConfigMap", "gateway-config")
        path = tmp_path / "antenna.yaml"
        path.write_text(config_map.inputs["data"]["antenna.yaml"])
        settings = load_settings(path)
        settings.check_production()
        assert settings.oidc.audience == "antenna-gateway"
        assert settings.oidc.allowed_azp == ["antenna-cli", "antenna-portal"]
        assert settings.vault.enabled is True
        assert settings.vault.auth_method == "kubernetes"
    assert load_settings(path).oidc.issuer == "https://login.antenna.example/realms/antenna"


def test_a_configuration_change_rolls_the_pods(dev: Recording, repo_root: Path) -> None:
    config = stack_file("dev")
    config["antenna:gateway"] = {**config["antenna:gateway"], "settings": {"limits": {"script_max_bytes": 65536}}}
    changed = run_program(config, repo_root=repo_root)
    config_map = changed.one("kubernetes:core/v1:ConfigMap", "gateway-config")
    assert yaml.safe_load(config_map.inputs["data"]["antenna.yaml"])["limits"] == {
        "script_max_bytes": 65536,
        "storage_uri": "redis://redis.antenna.svc:6379/0",
    }
    digest = "antenna.be/config-sha256"
    assert pod(changed)["metadata"]["annotations"][digest] != pod(dev)["metadata"]["annotations"][digest]
