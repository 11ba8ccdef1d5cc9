"""The double-entry quota ledger: allocations, reservations, charges, invariants, reconciliation."""
