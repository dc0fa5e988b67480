"""From a suite to a plan: suite files validated into dataclasses, trials with stable keys, the ``fit``
budget level, and the method registry that names what a plan may run."""
