"""Running a plan: the sweep loop, its executors (sequential, processes, Ray), one trial anywhere (worker,
runner), cores shared between processes, the nothing-to-do fast path, code identity and ``--dry-run``'s
cost estimate."""
