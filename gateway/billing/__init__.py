"""Pricing of compute in each site's own unit, from each partition's configured formula."""

from gateway.billing.formulas import (
    AMOUNT_QUANTUM,
    BillingFormula,
    MaxShareFormula,
    Resources,
    Share,
    StorageFormula,
    WholeNodeFormula,
    from_micro,
    hours,
    price,
    to_micro,
)

__all__ = [
    "AMOUNT_QUANTUM",
    "BillingFormula",
    "MaxShareFormula",
    "Resources",
    "Share",
    "StorageFormula",
    "WholeNodeFormula",
    "from_micro",
    "hours",
    "price",
    "to_micro",
]
