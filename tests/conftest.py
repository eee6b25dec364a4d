"""Hypothesis profiles: ``explore`` (the default) draws new examples on every run, which is how
edge cases get found during development; ``ci`` (``NMSIM_HYPOTHESIS_PROFILE=ci``, set by
``.ci/run``) draws the same examples on every run, so a tree that passed stays green and a
failure points at the change, not at a new draw. Failing draws found while exploring are
pinned with ``@example``."""

import os

from hypothesis import settings

settings.register_profile("explore")
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("NMSIM_HYPOTHESIS_PROFILE", "explore"))
