"""Model architectures, GEMM shapes, model and text loading."""
