"""Everything the gateway keeps in PostgreSQL: every SQL statement lives in this package."""

from gateway.store.attempts import (
    AttemptRecord,
    AttemptStore,
    EpochRecord,
    ListQuery,
    Order,
    Rewrite,
    Stored,
)
from gateway.store.database import migrate, open_pool
from gateway.store.images import ImageMeta, ImageStore, NewImage

__all__ = [
    "AttemptRecord",
    "AttemptStore",
    "EpochRecord",
    "ImageMeta",
    "ImageStore",
    "ListQuery",
    "NewImage",
    "Order",
    "Rewrite",
    "Stored",
    "migrate",
    "open_pool",
]
