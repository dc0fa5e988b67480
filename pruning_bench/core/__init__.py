"""What a method author needs: masks, budget units and meter, the one training loop, the Context a method
receives, the Method base class, mid-trial checkpoints, FLOPs and latency. Imports nothing from planning,
execution, tracking or reports (checked by the layering contracts in ``pyproject.toml``)."""
