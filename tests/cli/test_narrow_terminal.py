"""Every table fits an 80-column terminal without breaking a cell's text over lines; ``--wide`` shows all."""

from __future__ import annotations

from pathlib import Path

from tests.api.harness import ALICE, OPERATOR, PAT
from tests.cli.conftest import Live


def run80(live: Live, *args: str, person: str) -> str:
    env = {**live.env(person), "COLUMNS": "80"}
    from typer.testing import CliRunner

    from gateway.cli.main import app

    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_tables_fit_80_columns(live: Live, tmp_path: Path) -> None:
    script = tmp_path / "a-training-run-with-a-long-name.sh"
    script.write_text("#!/bin/bash\necho hi\n")
    job = live.json("submit", "--site", "local", "--project", "demo", "--partition", "small-g", "--gpus", "1",
                    str(script), person=ALICE)  # fmt: skip
    for args, person, whole in (
        (("jobs",), ALICE, [job["id"][:8], "local/small-g", "gpu-h"]),
        (("job", job["id"][:8]), ALICE, [job["id"][:8], "accepted"]),
        (("balance", "--project", "demo"), PAT, ["local", "core-h", "gpu-h"]),
        (("usage", "--project", "demo"), PAT, ["kind", "amount"]),
        (("sites",), OPERATOR, ["small-g", "core-h, whole nodes", "8 GPUs"]),
    ):
        text = run80(live, *args, person=person)
        assert max(len(line) for line in text.splitlines()) <= 80, text
        for word in whole:
            assert any(word in line for line in text.splitlines()), (word, text)


def test_wide_shows_full_ids_and_exact_amounts(live: Live, tmp_path: Path) -> None:
    script = tmp_path / "train.sh"
    script.write_text("#!/bin/bash\necho hi\n")
    job = live.json("submit", "--site", "local", "--project", "demo", str(script), person=ALICE)
    result = live.run("jobs", "--wide", person=ALICE)
    assert job["id"] in result.stdout
    assert job["reserved"] in result.stdout
