"""Everything the gateway keeps in PostgreSQL: every SQL statement lives in this package."""

from gateway.store.attempts import (
    AttemptRecord,
    AttemptStore,
    EpochRecord,
    Imported,
    ListQuery,
    Order,
    Rewrite,
    Stored,
)
from gateway.store.database import Database, DatabaseDown, migrate, open_pool
from gateway.store.images import ImageMeta, ImageStore, NewImage

__all__ = [
    "AttemptRecord",
    "AttemptStore",
    "Database",
    "DatabaseDown",
    "EpochRecord",
    "ImageMeta",
    "ImageStore",
    "Imported",
    "ListQuery",
    "NewImage",
    "Order",
    "Rewrite",
    "Stored",
    "migrate",
    "open_pool",
]
