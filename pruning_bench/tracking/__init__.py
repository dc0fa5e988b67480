"""MLflow: the tracker (one run per trial under a sweep run), trials claimed once, the shared tracking
server, and checkpoints mirrored to it."""
