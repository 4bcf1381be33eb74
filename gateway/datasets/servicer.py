"""DatasetService: validates uploads by decoding them, stores and streams images."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from gateway.attempts.validation import MAX_LABEL_CHARS, text_problem
from gateway.auth import Role, current
from gateway.config import Limits
from gateway.datasets.imaging import RejectedImage, in_test_split, inspect_image
from gateway.pagination import after_position, after_token
from gateway.store import ImageStore, NewImage
from gateway.store.trainers import TrainerStore
from metalearn.errors import InvalidArgument, NotFound, PermissionDenied, Violations
from metalearn.status import translate_errors
from metalearn.v1 import dataset_service_pb2, dataset_service_pb2_grpc

pb = dataset_service_pb2

DEFAULT_TEST_FRACTION = 0.2
# Images are stored a batch per commit: few round trips, bounded memory.
_BATCH_IMAGES = 32
_BATCH_BYTES = 32 * 1024 * 1024
# Per-image reasons kept in an UploadImages answer; past these only `rejected` counts, so
# a stream of a million bad images holds no more memory than one of a hundred (and the
# answer stays far below the message size limit). `rejected` minus the entries returned
# tells the client how many reasons were left out.
MAX_REJECTIONS = 100


def _label_problem(label: str) -> str | None:
    if not label.strip():
        return "no label"
    return text_problem(label, MAX_LABEL_CHARS)


def _check_label_list(v: Violations, labels: Any, limits: Limits) -> None:
    # One violation for a list too long, not one per label.
    if len(labels) > limits.max_labels:
        v.add("label_names", f"at most {limits.max_labels} labels, got {len(labels)}")
        return
    for i, label in enumerate(labels):
        problem = _label_problem(label)
        if problem:
            v.add(f"label_names[{i}]", problem)


# Images ListImages reads for one answer: its message stays a few MiB (an image is an id,
# a label index, a split and 32 bytes of sha256), whatever a run's data holds.
MAX_LIST_PAGE = 100_000


@dataclass
class _Page:
    """One page of ListImages: where it starts, how many images it reads, and (set by
    `_select`) the last id read when more may follow."""

    after: int
    size: int
    # Images earlier pages answered: `limit` bounds them all together.
    taken: int = 0
    next_after: int | None = None


class DatasetServicer(dataset_service_pb2_grpc.DatasetServiceServicer):
    """The image store's RPCs."""

    def __init__(self, store: ImageStore, trainers: TrainerStore, limits: Limits) -> None:
        self._store = store
        # Which labels a trainer may read: those of the work it holds.
        self._trainers = trainers
        self._limits = limits

    @translate_errors
    async def UploadImages(
        self, request_iterator: AsyncIterator[pb.UploadImagesRequest], context: Any
    ) -> pb.UploadImagesResponse:
        response = pb.UploadImagesResponse()
        batch: list[NewImage] = []
        batch_bytes = 0

        async def flush() -> None:
            nonlocal batch, batch_bytes
            for new in await self._store.add(batch):
                if new:
                    response.added += 1
                else:
                    response.duplicates += 1
            batch, batch_bytes = [], 0

        index = 0
        async for request in request_iterator:
            problem = _label_problem(request.label)
            if problem is None:
                try:
                    # Decoding is CPU work: keep it off the event loop.
                    decoded = await asyncio.to_thread(inspect_image, request.data, self._limits)
                except RejectedImage as err:
                    problem = str(err)
            if problem is not None:
                response.rejected += 1
                if len(response.rejections) < MAX_REJECTIONS:
                    response.rejections.add(
                        index=index, filename=request.filename[:256], reason=problem
                    )
            else:
                batch.append(NewImage(
                    request.label, decoded.sha256, decoded.format, decoded.width,
                    decoded.height, request.data,
                ))  # fmt: skip
                batch_bytes += len(request.data)
                if len(batch) >= _BATCH_IMAGES or batch_bytes >= _BATCH_BYTES:
                    await flush()
            index += 1
        await flush()
        return response

    @translate_errors
    async def ListLabels(
        self, request: pb.ListLabelsRequest, context: Any
    ) -> pb.ListLabelsResponse:
        labels = await self._store.labels()
        return pb.ListLabelsResponse(
            labels=[pb.LabelInfo(name=name, image_count=count) for name, count in labels]
        )

    async def _select(
        self, request: pb.ReadImagesRequest | pb.ListImagesRequest, page: _Page | None = None
    ) -> list[tuple[Any, pb.Split]]:
        """The images a ReadImages or ListImages request selects, with their splits:
        checked, and limited to its labels' work for a trainer's token. With `page`, only
        the images of that page (it learns where the next one starts)."""
        v = Violations()
        if not request.label_names and not request.ids:
            v.add("label_names", "give label names or image ids")
        _check_label_list(v, request.label_names, self._limits)
        if request.split not in pb.Split.values():
            v.add("split", f"unknown split {request.split}")
        if not 0.0 <= request.test_fraction < 1.0:  # also refuses NaN
            v.add("test_fraction", "must be at least 0 and below 1")
        if request.limit < 0:
            v.add("limit", f"must not be negative, got {request.limit}")
        if len(request.ids) > 100_000:
            v.add("ids", "at most 100000 ids")
        for i, image_id in enumerate(request.ids):
            if image_id <= 0:
                v.add(f"ids[{i}]", f"must be positive, got {image_id}")
                break
        v.raise_if_any()

        fraction = request.test_fraction or DEFAULT_TEST_FRACTION
        caller = current()
        if caller.role is Role.TRAINER:
            held = await self._trainers.held_labels(caller.name)
            # Checked before anything is read; says nothing of which labels exist.
            if not set(request.label_names) <= held:
                raise PermissionDenied("a trainer reads only the labels of the work it holds")
        if page is None:
            metas = await self._store.metadata(request.label_names, request.ids)
        else:
            metas = await self._store.metadata(
                request.label_names, request.ids, page.after, page.size
            )
            page.next_after = metas[-1].id if len(metas) == page.size else None
        if caller.role is Role.TRAINER and any(m.label not in held for m in metas):
            raise PermissionDenied("a trainer reads only the images of the work it holds")
        if request.ids:
            # Those this page would hold: after its start, up to its end if more follow.
            low = page.after if page else 0
            high = page.next_after if page and page.next_after is not None else 2**63
            wanted = {i for i in request.ids if low < i <= high}
            missing = sorted(wanted - {m.id for m in metas})
            if missing:
                raise NotFound(f"no images with ids {missing[:20]}")
        chosen: list[tuple[Any, pb.Split]] = []
        for meta in metas:
            split = (
                pb.SPLIT_TEST
                if in_test_split(meta.sha256, request.seed, fraction)
                else pb.SPLIT_TRAIN
            )
            # Explicit ids are read whatever their split; otherwise the split filters.
            if not request.ids and request.split not in (pb.SPLIT_UNSPECIFIED, pb.SPLIT_ALL, split):
                continue
            chosen.append((meta, split))
            if request.limit and len(chosen) + (page.taken if page else 0) >= request.limit:
                if page is not None:
                    page.next_after = None  # the limit is reached: no page follows
                break
        return chosen

    @translate_errors
    async def ReadImages(
        self, request: pb.ReadImagesRequest, context: Any
    ) -> AsyncIterator[pb.ReadImagesResponse]:
        chosen = await self._select(request)
        by_id = {meta.id: (meta, split) for meta, split in chosen}

        def message(meta: Any, split: Any, data: bytes) -> pb.ReadImagesResponse:
            return pb.ReadImagesResponse(
                id=meta.id,
                label=meta.label,
                sha256=meta.sha256.hex(),
                data=data,
                format=meta.format,
                width=meta.width,
                height=meta.height,
                split=split,
            )

        if request.skip_data:
            for meta, split in chosen:
                yield message(meta, split, b"")
            return
        async for image_id, data in self._store.read([m.id for m, _ in chosen]):
            meta, split = by_id[image_id]
            yield message(meta, split, data)

    @translate_errors
    async def ListImages(
        self, request: pb.ListImagesRequest, context: Any
    ) -> pb.ListImagesResponse:
        if request.page_size < 0:
            raise InvalidArgument.one("page_size", f"must not be negative, got {request.page_size}")
        # The token is bound to every field that selects (not the page size).
        parts = [sorted(request.label_names), request.split, request.test_fraction,
                 request.seed, request.limit, list(request.ids)]  # fmt: skip
        after, taken = after_position(parts, request.page_token)
        page = _Page(
            after=after, size=min(request.page_size or MAX_LIST_PAGE, MAX_LIST_PAGE), taken=taken
        )
        chosen = await self._select(request, page)
        labels: dict[str, int] = {}
        more = page.next_after is not None
        return pb.ListImagesResponse(
            ids=[meta.id for meta, _ in chosen],
            labels=[labels.setdefault(meta.label, len(labels)) for meta, _ in chosen],
            label_names=list(labels),
            sha256=b"".join(meta.sha256 for meta, _ in chosen),
            splits=[split for _, split in chosen],
            next_page_token=(
                after_token(parts, page.next_after, taken + len(chosen))
                if more and page.next_after
                else ""
            ),
        )

    @translate_errors
    async def DeleteImages(
        self, request: pb.DeleteImagesRequest, context: Any
    ) -> pb.DeleteImagesResponse:
        if not request.label_names:
            raise InvalidArgument.one("label_names", "name the labels whose images to delete")
        v = Violations()
        _check_label_list(v, request.label_names, self._limits)
        v.raise_if_any()
        return pb.DeleteImagesResponse(deleted=await self._store.delete(request.label_names))
