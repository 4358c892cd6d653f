"""Building a torchvision trunk, its weights, and the feature extraction engine.

Importing this package imports no PyTorch; its modules do.
"""
