"""A script whose #SBATCH lines ask for its resources, through both connectors on the real stack (issue 14
item 1): what Slurm allocated is what the gateway priced, at lumi (slurmrestd, which reads no #SBATCH line:
the gateway passes every field) and at lucia (ssh, where sbatch reads them: its command line wins)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.jobs.models import Job
from tests.faults.stackgw import stack_gateway
from tests.stack.plugin import SlurmStack
from tests.support.idp import LoopbackIdP

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SCRIPT = "#!/bin/bash\n#SBATCH --time=00:05:00\n#SBATCH --ntasks=1 --cpus-per-task=3\n#SBATCH --mem=3G\nsleep 1\n"


@pytest.mark.parametrize(("site", "partition"), [("lumi", "small"), ("lucia", "batch")])
async def test_item1_what_slurm_allocates_for_a_script_s_directives_is_what_was_priced(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path, site: str, partition: str
) -> None:
    async with stack_gateway(slurm_stack, test_idp, tmp_path) as gw:
        job = await gw.submit(site=site, partition=partition, script=SCRIPT)
        priced = gw.rt.db.run(lambda s: s.get_one(Job, job["id"]).spec)
        assert (priced["cores"], priced["memory_gb"]) == (3, "3")
        done = (await gw.drive([job["id"]], {"completed"}))[job["id"]]
        tres = slurm_stack.run(
            site,
            [
                "sacct",
                "--noheader",
                "--allocations",
                "--parsable2",
                "--format=AllocTRES",
                f"--jobs={done['site_job_id']}",
            ],
        )
        allocated = dict(part.split("=", 1) for part in tres.stdout.strip().split(","))
        assert (allocated["cpu"], allocated["mem"], allocated["node"]) == ("3", "3G", "1"), tres.stdout
        assert done["charged"] is not None
        gw.assert_sound()
