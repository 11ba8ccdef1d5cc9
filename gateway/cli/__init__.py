"""The ``antenna`` command line: for researchers, PIs, allocation managers and operators."""
