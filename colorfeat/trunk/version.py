"""The features stage's code version, importable without PyTorch (planning never imports it)."""

from __future__ import annotations

from colorfeat import __version__

# 2: zstd level 1 features; 3: structured `trunk` attrs, any torchvision trunk
FEATURES_VERSION = f"colorfeat-{__version__}/extract-3"
