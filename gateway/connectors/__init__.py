"""Connectors to sites: one interface (``base``), one adapter per way of reaching Slurm, and the registry."""
