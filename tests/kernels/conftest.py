"""Kernel tests run Triton through its CPU interpreter; it must be set before triton is imported."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
