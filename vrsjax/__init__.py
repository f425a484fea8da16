"""vrsjax: video reasoning segmentation in JAX.

Importing this package is cheap and never imports torch; the PyTorch services live in
`vrsjax.services` and are imported only when used.
"""

__version__ = "0.1.0"
