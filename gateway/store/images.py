"""Every SQL statement about images; returns plain dataclasses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool

from gateway.store.database import translate_db_errors


@dataclass(frozen=True)
class NewImage:
    """A decoded, validated image ready to store."""

    label: str
    sha256: bytes
    format: str
    width: int
    height: int
    data: bytes


@dataclass(frozen=True)
class ImageMeta:
    """An image's row without its bytes."""

    id: int
    label: str
    sha256: bytes
    format: str
    width: int
    height: int


@dataclass(frozen=True)
class ImageRecord:
    """An image's row with its bytes (empty when they were not asked for)."""

    meta: ImageMeta
    data: bytes


async def _tasks_changed(conn: psycopg.AsyncConnection[Any], labels: list[str]) -> None:
    """The tasks over these labels have other images now: their next look takes a new
    fingerprint (and so a new profile)."""
    if labels:
        await conn.execute(
            # Only tasks of images held here: a declared task's labels name its owner's
            # classes, not these images.
            "UPDATE tasks SET stale = true WHERE label_names ?| %s AND NOT stale"
            " AND source = 'IMAGES'",
            (labels,),
        )


class ImageStore:
    """Images in PostgreSQL, unique by (label, sha256)."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self._pool = pool

    async def add(self, images: Sequence[NewImage]) -> list[bool]:
        """Stores a batch in one commit; per image, True if new, False if a duplicate."""
        if not images:
            return []
        # One round trip for the batch: unnest the columns, skip existing (label, sha256).
        query = (
            "WITH batch AS (SELECT * FROM unnest(%s::text[], %s::bytea[], %s::text[],"
            " %s::int[], %s::int[], %s::bytea[]) WITH ORDINALITY"
            " AS b(label, sha256, format, width, height, data, ord))"
            " INSERT INTO images (label, sha256, format, width, height, size_bytes, data)"
            " SELECT label, sha256, format, width, height, length(data), data FROM batch"
            " ORDER BY ord ON CONFLICT (label, sha256) DO NOTHING RETURNING label, sha256"
        )
        columns = (
            [i.label for i in images], [i.sha256 for i in images], [i.format for i in images],
            [i.width for i in images], [i.height for i in images], [i.data for i in images],
        )  # fmt: skip
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(query, columns)
                inserted = {(row[0], bytes(row[1])) for row in await cur.fetchall()}
                await _tasks_changed(conn, sorted({label for label, _ in inserted}))
        # The same image twice in one batch is inserted once; the second is a duplicate.
        results: list[bool] = []
        for image in images:
            key = (image.label, image.sha256)
            results.append(key in inserted)
            inserted.discard(key)
        return results

    async def labels(self) -> list[tuple[str, int]]:
        """Every label with its image count, by name."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT label, count(*) FROM images GROUP BY label ORDER BY label"
                )
                return [(row[0], int(row[1])) for row in await cur.fetchall()]

    async def having_images(self, labels: Sequence[str]) -> set[str]:
        """Those of `labels` that have at least one image (an index lookup per label)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT l FROM unnest(%s::text[]) AS l"
                    " WHERE EXISTS (SELECT 1 FROM images WHERE label = l)",
                    (list(labels),),
                )
                return {row[0] for row in await cur.fetchall()}

    async def metadata(
        self, labels: Sequence[str], ids: Sequence[int], after: int = 0, limit: int | None = None
    ) -> list[ImageMeta]:
        """Metadata of the images with these labels, or these ids, by id: those after
        id `after`, at most `limit` of them (a page)."""
        param: list[Any]
        if ids:
            where, param = "id = ANY(%s)", list(ids)
        else:
            where, param = "label = ANY(%s)", list(labels)
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT id, label, sha256, format, width, height FROM images"  # noqa: S608
                    f" WHERE {where} AND id > %s ORDER BY id LIMIT %s",
                    (param, after, limit),
                )
                return [
                    ImageMeta(r[0], r[1], bytes(r[2]), r[3], r[4], r[5])
                    for r in await cur.fetchall()
                ]

    async def read(self, ids: Sequence[int], batch: int = 64) -> AsyncIterator[tuple[int, bytes]]:
        """Yields (id, bytes) for these ids in their order, a batch per query."""
        for start in range(0, len(ids), batch):
            chunk = list(ids[start : start + batch])
            with translate_db_errors():
                async with self._pool.connection() as conn:
                    cur = await conn.execute(
                        "SELECT id, data FROM images WHERE id = ANY(%s)", (chunk,)
                    )
                    found = {row[0]: bytes(row[1]) for row in await cur.fetchall()}
            for image_id in chunk:
                if image_id in found:  # deleted meanwhile: skip it
                    yield image_id, found[image_id]

    async def delete(self, labels: Sequence[str]) -> int:
        """Deletes every image of these labels; returns how many."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "DELETE FROM images WHERE label = ANY(%s)", (list(labels),)
                )
                deleted = cur.rowcount
                await _tasks_changed(conn, list(labels) if deleted else [])
                return deleted

    async def count(self, labels: list[str]) -> int:
        """How many images these labels have: the most a run on them can see."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) FROM images WHERE label = ANY(%s)", (labels,)
                )
                row = await cur.fetchone()
        return int(row[0]) if row else 0
