"""colortrain: the FiLM colorizer, its baselines, training, evaluation and colorization."""

from __future__ import annotations

__version__ = "0.1.0"
