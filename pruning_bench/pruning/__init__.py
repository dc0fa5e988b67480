"""Pruning building blocks that methods share: round planning for iterative methods, layer-wise density
rules, channel selection and physical shrinking of structured methods. Built on :mod:`pruning_bench.core`
only."""
