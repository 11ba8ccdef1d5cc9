"""Makes the Pulumi program (`infra/`) and the policy rules (`policies/pulumi/`) importable, as Pulumi does."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.infra.harness import Recording

_REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    for directory in (_REPO / "infra", _REPO / "policies" / "pulumi"):
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))


@pytest.fixture(scope="session")
def repo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository-shaped directory holding test Vault policies, rules and a dashboard."""
    from tests.infra.harness import make_repo

    return make_repo(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="session")
def dev(repo_root: Path) -> Recording:
    """The program run once on the committed `Pulumi.dev.yaml`."""
    from tests.infra.harness import run_program, stack_file

    return run_program(stack_file("dev"), repo_root=repo_root, stack="dev")


@pytest.fixture(scope="session")
def prod(repo_root: Path) -> Recording:
    """The program run once on the committed `Pulumi.prod.yaml`, given no MyAccessID secret (prod has none)."""
    from tests.infra.harness import PROD_SECRETS, run_program, stack_file

    return run_program(stack_file("prod"), repo_root=repo_root, stack="prod", secrets=PROD_SECRETS)
