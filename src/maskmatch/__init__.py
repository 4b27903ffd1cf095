"""maskmatch: handwritten mathematics to LaTeX (Mask & Match, arXiv 2508.06107)."""

__version__ = "0.1.0"
