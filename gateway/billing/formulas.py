"""Billing formulas: whole-node or MAX of resource shares, times wall-clock hours, in the site's own unit.

Rounding rule (the only one in the gateway): a price is computed EXACTLY, as a rational number
(``fractions.Fraction``: every configured rate, weight and divisor is a finite decimal, a duration is whole
seconds over 3600), and rounded ONCE at the end, UP (towards +infinity), to ``AMOUNT_QUANTUM`` = 0.000001
of the site's unit. Rounding up means a reservation never under-covers the charge computed by the same
formula, and because reservation and charge use this same function, a job that runs to its time limit with
the requested resources is charged exactly what was reserved. Shares marked ``ceil`` (LUMI's
``ceil(mem_GB / 2)``) are rounded up to a whole number inside the formula, as the site does. The ledger
stores amounts as integer micro-units, so nothing is ever a float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

AMOUNT_QUANTUM = Decimal("0.000001")
_MICRO = 1_000_000
_SECONDS_PER_HOUR = 3600


@dataclass(frozen=True, slots=True)
class Resources:
    """What a job requests (for the reservation) or was allocated (for the charge), summed over nodes."""

    nodes: int = 1
    cores: int = 1
    memory_gb: Decimal = Decimal(0)
    gpus: int = 0

    def __post_init__(self) -> None:
        if self.nodes < 0 or self.cores < 0 or self.memory_gb < 0 or self.gpus < 0:
            raise ValueError(f"resources cannot be negative: {self}")

    def amount_of(self, resource: str) -> Decimal:
        value: int | Decimal = getattr(self, resource)
        return Decimal(value)


Resource = Literal["nodes", "cores", "memory_gb", "gpus"]


class Share(BaseModel):
    """One term of a MAX formula: ``resource * multiply / divide``, rounded up to an integer if ``ceil``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resource: Resource
    multiply: Decimal = Field(default=Decimal(1), gt=0)
    divide: Decimal = Field(default=Decimal(1), gt=0)
    ceil: bool = False

    def exact(self, resources: Resources) -> Fraction:
        value = Fraction(resources.amount_of(self.resource)) * Fraction(self.multiply) / Fraction(self.divide)
        return Fraction(math.ceil(value)) if self.ceil else value


class WholeNodeFormula(BaseModel):
    """Exclusive partitions: ``nodes * rate_per_node`` units per wall-clock hour, whatever the job uses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["whole_node"] = "whole_node"
    unit: str = Field(description="the site's billing unit, e.g. 'cpu-core-hours', 'gpu-hours', 'buh'")
    rate_per_node: Decimal = Field(gt=0, description="units charged per node per hour")

    def exact_per_hour(self, resources: Resources) -> Fraction:
        return resources.nodes * Fraction(self.rate_per_node)

    def per_hour(self, resources: Resources) -> Decimal:
        """Units per wall-clock hour, rounded up to the quantum (for display)."""
        return _round_up(self.exact_per_hour(resources))


class MaxShareFormula(BaseModel):
    """Shared partitions: ``MAX(shares) * weight`` units per wall-clock hour."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["max_share"] = "max_share"
    unit: str
    weight: Decimal = Field(default=Decimal(1), gt=0)
    shares: list[Share] = Field(min_length=1)

    def exact_per_hour(self, resources: Resources) -> Fraction:
        return max(share.exact(resources) for share in self.shares) * Fraction(self.weight)

    def per_hour(self, resources: Resources) -> Decimal:
        """Units per wall-clock hour, rounded up to the quantum (for display)."""
        return _round_up(self.exact_per_hour(resources))


BillingFormula = Annotated[WholeNodeFormula | MaxShareFormula, Field(discriminator="kind")]


class StorageFormula(BaseModel):
    """Storage pools billed in TB-hours times a pool multiplier (LUMI-P 1, LUMI-F 10, LUMI-O 0.5)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: str = "tb-hours"
    multiplier: Decimal = Field(default=Decimal(1), gt=0)

    def price(self, terabytes: Decimal, seconds: int) -> Decimal:
        """Storing ``terabytes`` for ``seconds``, rounded up to the quantum."""
        if terabytes < 0:
            raise ValueError("a volume cannot be negative")
        return _round_up(Fraction(terabytes) * _exact_hours(seconds) * Fraction(self.multiplier))


def _exact_hours(seconds: int) -> Fraction:
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return Fraction(seconds, _SECONDS_PER_HOUR)


def hours(seconds: int) -> Decimal:
    """Wall-clock hours of a duration in whole seconds (rounded up to the quantum, for display)."""
    return _round_up(_exact_hours(seconds))


def price(formula: WholeNodeFormula | MaxShareFormula, resources: Resources, seconds: int) -> Decimal:
    """The price of ``resources`` held for ``seconds`` of wall-clock time: exact, then rounded up to the quantum."""
    return _round_up(formula.exact_per_hour(resources) * _exact_hours(seconds))


def _round_up(value: Fraction) -> Decimal:
    return Decimal(math.ceil(value * _MICRO)).scaleb(-6)


def to_micro(amount: Decimal) -> int:
    """Ledger storage form. Refuses amounts finer than the quantum rather than losing them."""
    micro = amount * _MICRO
    if micro != micro.to_integral_value():
        raise ValueError(f"{amount} is finer than the ledger's quantum {AMOUNT_QUANTUM}")
    return int(micro)


def from_micro(micro: int) -> Decimal:
    return Decimal(micro).scaleb(-6)
