"""Every worked example of the sites' billing rules, priced with the partitions of policies/sites.example.yaml.

The figures are the sites' own (LUMI billing policy, Lucia accounting page, as quoted in the project's
site-billing reference); a test fails if the shipped configuration or the formulas drift from them.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.billing import Resources, price
from gateway.settings import PartitionSettings, Settings

HOUR = 3600
DAY = 24 * HOUR


def partition(example: Settings, site: str, name: str) -> PartitionSettings:
    return example.sites[site].partitions[name]


def full_nodes(part: PartitionSettings, nodes: int) -> Resources:
    """Everything ``nodes`` nodes of the partition have: what an exclusive job is allocated."""
    return Resources(
        nodes=nodes,
        cores=nodes * part.cores_per_node,
        memory_gb=Decimal(nodes * part.memory_gb_per_node),
        gpus=nodes * part.gpus_per_node,
    )


# --- LUMI -----------------------------------------------------------------------------------------


def test_lumi_standard_16_nodes_for_12_hours_is_24576_core_hours(example: Settings) -> None:
    standard = partition(example, "lumi", "standard")
    assert standard.billing.unit == "cpu-core-hours"
    assert price(standard.billing, full_nodes(standard, 16), 12 * HOUR) == Decimal(24576)


def test_lumi_standard_bills_the_whole_node_even_for_one_core(example: Settings) -> None:
    standard = partition(example, "lumi", "standard")
    one_core = Resources(nodes=1, cores=1, memory_gb=Decimal(2))
    assert price(standard.billing, one_core, HOUR) == Decimal(128)


def test_lumi_bench_bills_like_standard(example: Settings) -> None:
    bench = partition(example, "lumi", "bench")
    assert price(bench.billing, full_nodes(bench, 16), 12 * HOUR) == Decimal(24576)


def test_lumi_standard_g_4_nodes_for_24_hours_is_384_gpu_hours(example: Settings) -> None:
    standard_g = partition(example, "lumi", "standard-g")
    assert standard_g.billing.unit == "gpu-hours"
    assert price(standard_g.billing, full_nodes(standard_g, 4), 24 * HOUR) == Decimal(384)


@pytest.mark.parametrize("name", ["small", "debug", "largemem"])
@pytest.mark.parametrize(
    ("cores", "memory_gb", "seconds", "expected"),
    [
        (32, 64, 2 * HOUR, 64),  # "32 CPU cores x 2 hours = 64 CPU-core-hours"
        (4, 4, DAY, 96),  # "4 CPU-cores and 4GB ... for 1 day = 96"
        (4, 32, DAY, 384),  # "4 CPU-cores and 32GB ... (32GB / 2GB) x 24 hours = 384"
        (1, 3, HOUR, 2),  # ceil(3 GB / 2 GB) = 2 slices
    ],
)
def test_lumi_shared_cpu_partitions_bill_max_of_cores_and_2gb_slices(
    example: Settings, name: str, cores: int, memory_gb: int, seconds: int, expected: int
) -> None:
    shared = partition(example, "lumi", name)
    assert not shared.exclusive
    resources = Resources(nodes=1, cores=cores, memory_gb=Decimal(memory_gb))
    assert price(shared.billing, resources, seconds) == Decimal(expected)


@pytest.mark.parametrize("name", ["small-g", "dev-g"])
@pytest.mark.parametrize(
    ("cores", "memory_gb", "gcds", "expected"),
    [
        (8, 64, 1, Decimal("0.5")),  # one GCD with its share of cores and memory: half a module
        (7, 60, 2, Decimal(1)),  # two GCDs = one MI250X module = one GPU-hour
        (56, 480, 8, Decimal(4)),  # a whole node: 4 modules
        (16, 64, 1, Decimal(1)),  # ceil(16 / 8) = 2 shares of cores beat 1 GCD
        (8, 129, 1, Decimal("1.5")),  # ceil(129 / 64) = 3 shares of memory beat 1 GCD
    ],
)
def test_lumi_shared_gpu_partitions_bill_max_of_shares_times_half(
    example: Settings, name: str, cores: int, memory_gb: int, gcds: int, expected: Decimal
) -> None:
    shared = partition(example, "lumi", name)
    resources = Resources(nodes=1, cores=cores, memory_gb=Decimal(memory_gb), gpus=gcds)
    assert price(shared.billing, resources, HOUR) == expected


@pytest.mark.parametrize(
    ("pool", "expected"),
    [("LUMI-P", Decimal("115.2")), ("LUMI-F", Decimal(1152)), ("LUMI-O", Decimal("57.6"))],
)
def test_lumi_storage_1_2_tb_for_4_days(example: Settings, pool: str, expected: Decimal) -> None:
    formula = example.sites["lumi"].storage[pool]
    assert formula.unit == "tb-hours"
    assert formula.price(Decimal("1.2"), 4 * DAY) == expected


# --- JUPITER --------------------------------------------------------------------------------------


def test_jupiter_booster_bills_complete_nodes_of_288_cores(example: Settings) -> None:
    booster = partition(example, "jupiter", "booster")
    assert booster.billing.unit == "core-hours"
    assert booster.exclusive
    assert booster.cores_per_node == 288
    assert price(booster.billing, full_nodes(booster, 1), HOUR) == Decimal(288)
    assert price(booster.billing, full_nodes(booster, 10), 12 * HOUR) == Decimal(10 * 288 * 12)
    # whatever the job uses: one core of one node costs the node
    assert price(booster.billing, Resources(nodes=1, cores=1, gpus=1), HOUR) == Decimal(288)


# --- Lucia ----------------------------------------------------------------------------------------

LUCIA_FULL_NODE_BUH = {
    "batch": Decimal(128),
    "debug": Decimal(128),
    "medium": Decimal(160),
    "large": Decimal(256),
    "xlarge": Decimal(320),
    "gpu": Decimal(512),
    "ia": Decimal("1638.4"),
    "visu": Decimal(128),
}


def test_every_lucia_partition_is_shipped(example: Settings) -> None:
    assert set(example.sites["lucia"].partitions) == set(LUCIA_FULL_NODE_BUH)


@pytest.mark.parametrize(("name", "expected"), sorted(LUCIA_FULL_NODE_BUH.items()))
def test_lucia_buh_per_full_node_hour(example: Settings, name: str, expected: Decimal) -> None:
    part = partition(example, "lucia", name)
    assert part.billing.unit == "buh"
    assert price(part.billing, full_nodes(part, 1), HOUR) == expected
    assert price(part.billing, full_nodes(part, 3), 2 * HOUR) == expected * 6


@pytest.mark.parametrize(
    ("name", "resources", "expected"),
    [
        # the "Min BUh" column: the smallest request of each node type, for one hour
        ("batch", Resources(cores=1), Decimal(1)),
        ("debug", Resources(cores=1), Decimal(1)),
        ("medium", Resources(cores=1), Decimal("1.25")),
        ("large", Resources(cores=1), Decimal(4)),
        ("xlarge", Resources(cores=1), Decimal(5)),
        ("gpu", Resources(cores=1, gpus=1), Decimal(128)),
        ("ia", Resources(cores=1, gpus=1), Decimal("204.8")),
        ("visu", Resources(cores=1, gpus=1), Decimal(32)),
        # "1 CPU along with all the memory available on the node will be charged the full node"
        ("batch", Resources(cores=1, memory_gb=Decimal(240)), Decimal(128)),
        # partial requests: the MAX of the shares, times the weight
        ("batch", Resources(cores=16, memory_gb=Decimal(120)), Decimal(64)),  # memory: 120 x 128/240
        ("batch", Resources(cores=64, memory_gb=Decimal(30)), Decimal(64)),  # cores
        ("medium", Resources(cores=8, memory_gb=Decimal(123)), Decimal(40)),  # 123 x 128/492 = 32, x 1.25
        ("large", Resources(cores=2, memory_gb=Decimal(500)), Decimal(64)),  # 500 x 64/2000 = 16, x 4
        ("gpu", Resources(cores=8, memory_gb=Decimal(60), gpus=1), Decimal(128)),  # Cenaero's advice per GPU
        ("gpu", Resources(cores=16, memory_gb=Decimal(60), gpus=1), Decimal(256)),  # cores beat the GPU
        ("ia", Resources(cores=8, memory_gb=Decimal(500), gpus=1), Decimal("409.6")),  # memory: 16 x 25.6
        ("visu", Resources(cores=4, memory_gb=Decimal(246), gpus=1), Decimal(64)),  # memory: 16 x 4
    ],
)
def test_lucia_shared_max_formula_on_partial_requests(
    example: Settings, name: str, resources: Resources, expected: Decimal
) -> None:
    part = partition(example, "lucia", name)
    assert price(part.billing, resources, HOUR) == expected


def test_lucia_memory_share_that_is_not_a_whole_number_rounds_up_only_once(example: Settings) -> None:
    batch = partition(example, "lucia", "batch")
    # 1 GB x 128 / 240 = 8/15 BU per hour; for 15 minutes 2/15 = 0.1333... -> 0.133334 (rounded up once)
    assert price(batch.billing, Resources(cores=0, memory_gb=Decimal(1)), 15 * 60) == Decimal("0.133334")
    # a share that is not a finite decimal times a duration that cancels it is exact: 8/15 x 15/8 h = 1
    assert price(batch.billing, Resources(cores=0, memory_gb=Decimal(1)), 6750) == Decimal(1)
