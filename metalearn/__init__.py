"""metalearn: remembers every training attempt so that machines can learn how to learn."""

__version__ = "0.1.0"
