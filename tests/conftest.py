"""Fixtures shared by the whole suite: real servers started once per session."""

pytest_plugins = ["tests.support.openbao", "tests.support.db", "tests.support.idp", "tests.stack.plugin"]
