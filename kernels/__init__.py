"""Triton kernels, one op per module; installed as ``fastwsol.kernels``."""
