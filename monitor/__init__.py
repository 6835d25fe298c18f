"""mqm, the model-quality monitor.

Importing this package does nothing: no I/O, no heavy imports. The serving-side
client lives in ``monitor.client`` and stays light; everything else is imported
from its own module.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
