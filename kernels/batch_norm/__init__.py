"""Batch norm: per-channel statistics (Chan-merged), normalisation, and the backward reductions."""
