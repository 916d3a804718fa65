"""Measurement code, kept outside the model: FLOPs, throughput/latency/memory, scaling study."""
from .flops import PAPER_GFLOPS, count_flops

__all__ = ["PAPER_GFLOPS", "count_flops"]
