"""Pulumi policy rules for the Antenna stack (plain functions; `__main__.py` serves them as a PolicyPack)."""
