"""maskmatch: handwritten mathematics to LaTeX (Mask & Match, arXiv 2508.06107).

`from maskmatch import Recognizer` loads torch on first use only, so `import maskmatch` stays light.
"""

from maskmatch.version import __version__

__all__ = ["Recognizer", "Recognition", "__version__"]


def __getattr__(name: str):
    if name in ("Recognizer", "Recognition"):
        from maskmatch import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module 'maskmatch' has no attribute {name!r}")
