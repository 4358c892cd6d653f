"""colorfeat: the data pipeline and feature store for learning to colour from language.

Importable without Prefect. One module per thing the pipeline produces.
"""

from __future__ import annotations

__version__ = "0.1.0"
