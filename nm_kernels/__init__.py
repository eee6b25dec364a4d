"""Numba CPU and Triton GPU kernels on the compressed N:M format."""
