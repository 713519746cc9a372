"""Replenishment: reorder points, order-up-to levels, suggestions and budget-constrained ordering.

`rules` holds the pure maths (no I/O, tested without a database); `optimise` spreads a budget and
a storage capacity over many products as a mixed-integer program (SciPy's HiGHS).
"""
