"""alcli: active learning on large image pools, from the shell."""

from __future__ import annotations

__version__ = "0.1.0"
