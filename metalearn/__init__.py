"""metalearn: remembers every training attempt so that machines can learn how to learn."""

__version__ = "0.1.0"

from metalearn.client import Client, MetalearnError

__all__ = ["Client", "MetalearnError", "__version__"]
