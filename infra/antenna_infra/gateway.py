"""The gateway on Kubernetes: replicas sharing only PostgreSQL (and Redis), upgraded with no downtime.

Its configuration file is generated from the stack configuration and mounted from a ConfigMap; it holds
Vault references only, never secrets.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from antenna_infra.config import StackConfig

CONFIG_PATH = "/etc/antenna/antenna.yaml"
APP_LABELS = {"app.kubernetes.io/name": "antenna-gateway", "app.kubernetes.io/part-of": "antenna"}
# Cloud metadata endpoints hand out node credentials: a request forged through a site connector must not
# reach them.
_METADATA_CIDRS = ["169.254.169.254/32"]


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def gateway_settings(stack: StackConfig, *, gateway_clients: list[str]) -> dict[str, Any]:
    """The gateway's configuration file (see gateway/settings.py) for this stack."""
    identity, secrets, gateway = stack.identity, stack.secrets, stack.gateway
    settings: dict[str, Any] = {
        "public_url": gateway.public_url,
        "database": {"url": gateway.database_url},
        "oidc": {
            "issuer": identity.issuer,
            "audience": identity.audience,
            "allowed_azp": gateway_clients,
            "entitlement_namespaces": identity.myaccessid.entitlement_namespaces,
        },
        "vault": {
            "enabled": True,
            "address": gateway.vault_address,
            "auth_method": "kubernetes",
            "kubernetes_role": secrets.gateway_role,
            "kv_mount": secrets.kv_mount,
            "ssh_mount": secrets.ssh_mount,
            "database_mount": secrets.database_mount,
            "database_role": secrets.gateway_role if secrets.database is not None else "",
        },
        "logging": {"level": "INFO", "json": True},
    }
    if gateway.redis_url is not None:
        settings["limits"] = {"storage_uri": gateway.redis_url}
    return _merge(settings, gateway.settings)


class Gateway(pulumi.ComponentResource):
    """Namespace, service account, ConfigMap, Deployment, Service, PodDisruptionBudget, HPA, NetworkPolicy."""

    service: k8s.core.v1.Service
    deployment: k8s.apps.v1.Deployment

    def __init__(
        self,
        name: str,
        stack: StackConfig,
        *,
        gateway_clients: list[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("antenna:index:Gateway", name, None, opts)
        cfg = stack.gateway
        meta = k8s.meta.v1
        core = k8s.core.v1
        child = pulumi.ResourceOptions(parent=self)
        ns_name = cfg.namespace

        namespace = core.Namespace(
            f"{name}-namespace",
            metadata=meta.ObjectMetaArgs(
                name=ns_name,
                # The API server itself refuses pods that are privileged, root or without seccomp.
                labels={
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            ),
            opts=child,
        )
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[namespace])

        def metadata(resource: str, **extra: Any) -> meta.ObjectMetaArgs:
            return meta.ObjectMetaArgs(name=resource, namespace=ns_name, labels=APP_LABELS, **extra)

        # The token is what Vault's Kubernetes auth verifies; nothing else in the pod talks to the API server.
        account = core.ServiceAccount(
            f"{name}-service-account",
            metadata=metadata(stack.secrets.gateway_role),
            automount_service_account_token=True,
            opts=in_ns,
        )
        config_text = yaml.safe_dump(gateway_settings(stack, gateway_clients=gateway_clients), sort_keys=True)
        config_map = core.ConfigMap(
            f"{name}-config",
            metadata=metadata("antenna-gateway-config"),
            data={"antenna.yaml": config_text},
            opts=in_ns,
        )
        res = cfg.resources
        port = cfg.port
        probe_path = {"liveness": "/healthz", "readiness": "/readyz"}

        def probe(kind: str, *, period: int, failures: int) -> core.ProbeArgs:
            return core.ProbeArgs(
                http_get=core.HTTPGetActionArgs(path=probe_path[kind], port="http"),
                period_seconds=period,
                timeout_seconds=3,
                failure_threshold=failures,
            )

        container = core.ContainerArgs(
            name="gateway",
            image=cfg.image,
            image_pull_policy="IfNotPresent",
            command=["antenna", "serve"],
            env=[core.EnvVarArgs(name="ANTENNA_CONFIG", value=CONFIG_PATH)],
            ports=[core.ContainerPortArgs(name="http", container_port=port, protocol="TCP")],
            startup_probe=core.ProbeArgs(
                http_get=core.HTTPGetActionArgs(path="/healthz", port="http"),
                period_seconds=2,
                failure_threshold=30,
            ),
            liveness_probe=probe("liveness", period=10, failures=3),
            readiness_probe=probe("readiness", period=5, failures=2),
            resources=core.ResourceRequirementsArgs(
                requests={"cpu": res.cpu_request, "memory": res.memory_request},
                limits={"cpu": res.cpu_limit, "memory": res.memory_limit},
            ),
            security_context=core.SecurityContextArgs(
                run_as_non_root=True,
                run_as_user=10001,
                run_as_group=10001,
                allow_privilege_escalation=False,
                privileged=False,
                read_only_root_filesystem=True,
                capabilities=core.CapabilitiesArgs(drop=["ALL"]),
                seccomp_profile=core.SeccompProfileArgs(type="RuntimeDefault"),
            ),
            volume_mounts=[
                core.VolumeMountArgs(name="config", mount_path="/etc/antenna", read_only=True),
                core.VolumeMountArgs(name="tmp", mount_path="/tmp"),  # noqa: S108 - the pod's own emptyDir
            ],
        )
        # A changed configuration changes the pod template, which rolls the Deployment.
        config_digest = hashlib.sha256(config_text.encode()).hexdigest()
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=metadata("antenna-gateway"),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=cfg.replicas,
                selector=meta.LabelSelectorArgs(match_labels=APP_LABELS),
                # Zero downtime: a new pod must be ready before an old one goes.
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=1),
                ),
                template=core.PodTemplateSpecArgs(
                    metadata=meta.ObjectMetaArgs(
                        labels=APP_LABELS,
                        annotations={
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(port),
                            "prometheus.io/path": "/metrics",
                            "antenna.be/config-sha256": config_digest,
                        },
                    ),
                    spec=core.PodSpecArgs(
                        service_account_name=account.metadata.name,
                        security_context=core.PodSecurityContextArgs(
                            run_as_non_root=True,
                            run_as_user=10001,
                            run_as_group=10001,
                            fs_group=10001,
                            seccomp_profile=core.SeccompProfileArgs(type="RuntimeDefault"),
                        ),
                        containers=[container],
                        volumes=[
                            core.VolumeArgs(
                                name="config",
                                config_map=core.ConfigMapVolumeSourceArgs(name=config_map.metadata.name),
                            ),
                            core.VolumeArgs(name="tmp", empty_dir=core.EmptyDirVolumeSourceArgs(size_limit="64Mi")),
                        ],
                        termination_grace_period_seconds=30,
                        topology_spread_constraints=[
                            core.TopologySpreadConstraintArgs(
                                max_skew=1,
                                topology_key="kubernetes.io/hostname",
                                when_unsatisfiable="ScheduleAnyway",
                                label_selector=meta.LabelSelectorArgs(match_labels=APP_LABELS),
                            )
                        ],
                    ),
                ),
            ),
            opts=in_ns,
        )
        self.service = core.Service(
            f"{name}-service",
            metadata=metadata("antenna-gateway"),
            spec=core.ServiceSpecArgs(
                type="ClusterIP",
                selector=APP_LABELS,
                ports=[core.ServicePortArgs(name="http", port=80, target_port="http", protocol="TCP")],
            ),
            opts=in_ns,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=metadata("antenna-gateway"),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                min_available=1, selector=meta.LabelSelectorArgs(match_labels=APP_LABELS)
            ),
            opts=in_ns,
        )
        hpa = k8s.autoscaling.v2
        hpa.HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata=metadata("antenna-gateway"),
            spec=hpa.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=hpa.CrossVersionObjectReferenceArgs(
                    api_version="apps/v1", kind="Deployment", name=self.deployment.metadata.name
                ),
                min_replicas=cfg.replicas,
                max_replicas=cfg.max_replicas,
                metrics=[
                    hpa.MetricSpecArgs(
                        type="Resource",
                        resource=hpa.ResourceMetricSourceArgs(
                            name="cpu",
                            target=hpa.MetricTargetArgs(type="Utilization", average_utilization=70),
                        ),
                    )
                ],
            ),
            opts=in_ns,
        )
        net = k8s.networking.v1

        def from_namespaces(names: list[str]) -> list[net.NetworkPolicyPeerArgs]:
            return [
                net.NetworkPolicyPeerArgs(
                    namespace_selector=meta.LabelSelectorArgs(match_labels={"kubernetes.io/metadata.name": ns})
                )
                for ns in names
            ]

        net.NetworkPolicy(
            f"{name}-network-policy",
            metadata=metadata("antenna-gateway"),
            spec=net.NetworkPolicySpecArgs(
                pod_selector=meta.LabelSelectorArgs(match_labels=APP_LABELS),
                policy_types=["Ingress", "Egress"],
                # Only the ingress controller (API traffic) and Prometheus (scrapes) reach the pods.
                ingress=[
                    net.NetworkPolicyIngressRuleArgs(
                        from_=from_namespaces(cfg.ingress_namespaces + cfg.monitoring_namespaces),
                        ports=[net.NetworkPolicyPortArgs(port=port, protocol="TCP")],
                    )
                ],
                # Sites, Vault, Keycloak and PostgreSQL may be anywhere; cloud metadata is never needed.
                egress=[
                    net.NetworkPolicyEgressRuleArgs(
                        to=from_namespaces(["kube-system"]),
                        ports=[
                            net.NetworkPolicyPortArgs(port=53, protocol="UDP"),
                            net.NetworkPolicyPortArgs(port=53, protocol="TCP"),
                        ],
                    ),
                    net.NetworkPolicyEgressRuleArgs(
                        to=[
                            net.NetworkPolicyPeerArgs(
                                ip_block=net.IPBlockArgs(cidr="0.0.0.0/0", except_=_METADATA_CIDRS)
                            )
                        ]
                    ),
                ],
            ),
            opts=in_ns,
        )
        self.register_outputs({"namespace": ns_name, "service": self.service.metadata.name})
