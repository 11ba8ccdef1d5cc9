"""`antenna deploy`: drives Ansible (hosts, through ansible-runner) and Pulumi (through its Automation API).

``deploy(request, progress)`` runs the parts a request names, turns both tools' events into ``DeployEvent``s
for a live display, and returns a ``DeploySummary``. Nothing runs at import; Pulumi and ansible-runner are
imported only when a deploy needs them (they are in the `infra` dependency group, not the gateway's).
"""

from gateway.deploy.driver import PARTS, DeployRequest, Part, default_repo_root, deploy
from gateway.deploy.events import DeployEvent, DeploySummary, EventKind, Failure, Step, StepResult

__all__ = [
    "PARTS",
    "DeployEvent",
    "DeployRequest",
    "DeploySummary",
    "EventKind",
    "Failure",
    "Part",
    "Step",
    "StepResult",
    "default_repo_root",
    "deploy",
]
