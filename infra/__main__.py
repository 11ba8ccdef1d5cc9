"""What `pulumi up` runs in this directory: the Antenna stack (see antenna_infra.program)."""

from antenna_infra.program import run

run()
