"""Billing formulas: whole-node or MAX of resource shares, times wall-clock hours.

Rounding rule (the only one in the gateway): every price is computed exactly with ``Decimal`` at 40
significant digits, then rounded UP (towards +infinity) to ``AMOUNT_QUANTUM`` = 0.000001 of the site's
unit. Rounding up means a reservation never under-covers the charge computed by the same formula, and
because reservation and charge use this same function, a job that runs to its time limit with the
requested resources is charged exactly what was reserved. The ledger stores amounts as integer
micro-units, so nothing is ever a float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, Context, Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

AMOUNT_QUANTUM = Decimal("0.000001")
_MICRO = 1_000_000
_EXACT = Context(prec=40)
_SECONDS_PER_HOUR = Decimal(3600)


@dataclass(frozen=True, slots=True)
class Resources:
    """What a job requests (for the reservation) or was allocated (for the charge), summed over nodes."""

    nodes: int = 1
    cores: int = 1
    memory_gb: Decimal = Decimal(0)
    gpus: int = 0

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

    def of(self, resources: Resources) -> Decimal:
        value = _EXACT.divide(_EXACT.multiply(resources.amount_of(self.resource), self.multiply), self.divide)
        return Decimal(math.ceil(value)) if self.ceil else value


class WholeNodeFormula(BaseModel):
    """Exclusive partitions: ``nodes * rate_per_node`` units per wall-clock hour, whatever the job uses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["whole_node"] = "whole_node"
    unit: str = Field(description="the site's billing unit, e.g. 'cpu-core-hours', 'gpu-hours', 'buh'")
    rate_per_node: Decimal = Field(gt=0, description="units charged per node per hour")

    def per_hour(self, resources: Resources) -> Decimal:
        return _EXACT.multiply(Decimal(resources.nodes), self.rate_per_node)


class MaxShareFormula(BaseModel):
    """Shared partitions: ``MAX(shares) * weight`` units per wall-clock hour."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["max_share"] = "max_share"
    unit: str
    weight: Decimal = Field(default=Decimal(1), gt=0)
    shares: list[Share] = Field(min_length=1)

    def per_hour(self, resources: Resources) -> Decimal:
        return _EXACT.multiply(max(share.of(resources) for share in self.shares), self.weight)


BillingFormula = Annotated[WholeNodeFormula | MaxShareFormula, Field(discriminator="kind")]


class StorageFormula(BaseModel):
    """Storage pools billed in TB-hours times a pool multiplier (LUMI-P 1, LUMI-F 10, LUMI-O 0.5)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: str = "tb-hours"
    multiplier: Decimal = Field(default=Decimal(1), gt=0)

    def price(self, terabytes: Decimal, seconds: int) -> Decimal:
        raw = _EXACT.multiply(_EXACT.multiply(terabytes, hours(seconds)), self.multiplier)
        return _round_up(raw)


def hours(seconds: int) -> Decimal:
    """Exact wall-clock hours of a duration in whole seconds."""
    return _EXACT.divide(Decimal(seconds), _SECONDS_PER_HOUR)


def price(formula: WholeNodeFormula | MaxShareFormula, resources: Resources, seconds: PositiveInt | int) -> Decimal:
    """The price of ``resources`` held for ``seconds`` of wall-clock time, rounded up to the quantum."""
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return _round_up(_EXACT.multiply(formula.per_hour(resources), hours(seconds)))


def _round_up(value: Decimal) -> Decimal:
    return value.quantize(AMOUNT_QUANTUM, rounding=ROUND_CEILING, context=_EXACT)


def to_micro(amount: Decimal) -> int:
    """Ledger storage form. Refuses amounts finer than the quantum rather than losing them."""
    micro = amount * _MICRO
    if micro != micro.to_integral_value():
        raise ValueError(f"{amount} is finer than the ledger's quantum {AMOUNT_QUANTUM}")
    return int(micro)


def from_micro(micro: int) -> Decimal:
    return (Decimal(micro) / _MICRO).quantize(AMOUNT_QUANTUM)
