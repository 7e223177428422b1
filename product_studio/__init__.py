"""Product Studio: turn one product photo into listing-ready image variants.

Importing this package must stay cheap: torch, diffusers and rembg are imported lazily
by the backends that need them.
"""

__version__ = "0.1.0"
