"""pruning_bench: compare neural-network pruning methods under identical compute budgets."""

__version__ = "0.1.0"

# Bump when a change alters what a trial computes (training loop, measurements, method defaults):
# it is part of every trial key, so finished trials of an older harness are not reused silently.
RESULT_VERSION = "1"
