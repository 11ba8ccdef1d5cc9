"""``#SBATCH`` lines read as sbatch reads them and filled into the spec (issue 14 item 1); the refusals are
in tests/api/test_bad_input.py, and what Slurm allocates for such a script in tests/faults/test_directives_stack.py."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.jobs.directives import read_directives
from gateway.jobs.models import Job
from tests.api.harness import ALICE, Gateway, job_body, open_gateway
from tests.support.idp import LoopbackIdP

pytestmark = pytest.mark.anyio


def test_item1_directives_are_read_in_every_form_up_to_the_first_command() -> None:
    script = "\n".join(
        [
            "#!/bin/bash -l",
            "# a comment, then a blank line",
            "",
            "#SBATCH --time=01:30:00   # a comment after the options",
            "#SBATCH -N 2",
            "#SBATCH -c4 --mem 8G",
            '#SBATCH --job-name "train run"',
            "#SBATCH --mail-type=END",
            "module load pytorch",
            "#SBATCH --array=0-999   (after the first command: a plain comment, as in sbatch)",
        ]
    )
    found = [(d.name, d.value) for d in read_directives(script)]
    assert found == [
        ("time", "01:30:00"),
        ("nodes", "2"),
        ("cpus-per-task", "4"),
        ("mem", "8G"),
        ("job-name", "train run"),
        ("mail-type", "END"),
    ]


async def test_item1_directives_fill_what_the_request_left_unset_and_are_priced(
    tmp_path: Path, test_idp: LoopbackIdP
) -> None:
    async with open_gateway(tmp_path, test_idp) as gw:
        script = (
            "#!/bin/bash\n#SBATCH --time=00:30:00\n#SBATCH --ntasks=2 --cpus-per-task=3\n#SBATCH --mem=6G\nhostname\n"
        )
        job = await submit(gw, job_body(time_limit=None, script=script))
        assert Decimal(job["reserved"]) == Decimal(6) / 2  # 6 cores × half an hour, 1 core-hour per core-hour
        stored = gw.rt.db.run(lambda s: s.get_one(Job, job["id"]).spec)
        assert (stored["cores"], stored["memory_gb"], stored["time_limit_minutes"]) == (6, "6", 30)
        # The same value in both places is no conflict.
        same = await submit(gw, job_body(time_limit="00:30:00", script=script))
        assert same["reserved"] == job["reserved"]


async def submit(gw: Gateway, body: dict[str, object]) -> dict[str, str]:
    r = await gw.client.post("/v1/jobs", json=body, headers=gw.auth(ALICE))
    assert r.status_code == 202, r.text
    job: dict[str, str] = r.json()
    return job
