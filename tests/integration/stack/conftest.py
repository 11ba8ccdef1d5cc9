"""The stack's own smoke tests take the session fixture from the plugin (the root conftest registers it too)."""

from tests.stack.plugin import slurm_stack  # noqa: F401
