"""DatasetService: uploads are decoded before storing; reads split deterministically."""

from __future__ import annotations

import hashlib

import grpc

from metalearn.v1 import dataset_service_pb2 as pb
from tests.harness import png, snapshot
from tests.rpc import expect_error, violations

CODE = grpc.StatusCode


def upload(stub, items: list[tuple[str, bytes]]) -> pb.UploadImagesResponse:
    return stub.UploadImages(
        iter(
            pb.UploadImagesRequest(label=label, data=data, filename=f"f{i}")
            for i, (label, data) in enumerate(items)
        )
    )


def test_one_corrupt_image_does_not_lose_the_rest(datasets) -> None:
    good = [png((i * 20, 0, 0)) for i in range(5)]
    corrupt = good[0][:40]  # a truncated PNG: its header parses, its pixels do not
    reply = upload(
        datasets,
        [
            ("cat", good[0]),
            ("cat", good[1]),
            ("cat", corrupt),
            ("cat", b"not an image at all"),
            ("cat", good[2]),
            ("", good[3]),
            ("cat", good[4]),
        ],
    )
    assert (reply.added, reply.duplicates, reply.rejected) == (4, 0, 3)
    assert {r.index for r in reply.rejections} == {2, 3, 5}
    assert all(r.reason for r in reply.rejections)
    labels = datasets.ListLabels(pb.ListLabelsRequest()).labels
    assert [(label.name, label.image_count) for label in labels] == [("cat", 4)]


def test_duplicates_are_counted_per_label(datasets) -> None:
    image = png((1, 2, 3))
    reply = upload(datasets, [("cat", image), ("cat", image), ("dog", image)])
    assert (reply.added, reply.duplicates) == (2, 1)
    assert upload(datasets, [("cat", image)]).duplicates == 1


def test_every_format_is_accepted_and_unknown_ones_refused(datasets) -> None:
    items = [
        ("x", png((9, 9, i), fmt=f)) for i, f in enumerate(["PNG", "JPEG", "WEBP", "BMP", "GIF"])
    ]
    items.append(("x", png(fmt="TIFF")))
    reply = upload(datasets, items)
    assert reply.added == 5 and reply.rejected == 1
    assert "TIFF" in reply.rejections[0].reason


def test_too_many_pixels_is_refused_without_decoding(datasets) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buf, format="PNG")  # 48 MP, compresses to little
    reply = upload(datasets, [("big", buf.getvalue())])
    assert reply.rejected == 1 and "pixels" in reply.rejections[0].reason


def test_read_images_splits_deterministically(datasets) -> None:
    images = [png((i, 255 - i, 7)) for i in range(60)]
    upload(datasets, [("a" if i % 2 else "b", img) for i, img in enumerate(images)])

    def read(**kw) -> list[pb.ReadImagesResponse]:
        return list(datasets.ReadImages(pb.ReadImagesRequest(label_names=["a", "b"], **kw)))

    everything = read()
    assert len(everything) == 60
    assert all(hashlib.sha256(m.data).hexdigest() == m.sha256 for m in everything)
    train, test = read(split=pb.SPLIT_TRAIN), read(split=pb.SPLIT_TEST)
    assert len(train) + len(test) == 60 and 0 < len(test) < 30
    assert not {m.id for m in train} & {m.id for m in test}
    assert [m.id for m in read(split=pb.SPLIT_TEST)] == [m.id for m in test]
    other_seed = read(split=pb.SPLIT_TEST, seed=7)
    assert [m.id for m in other_seed] != [m.id for m in test]
    assert len(read(limit=5)) == 5
    meta = read(skip_data=True)
    assert len(meta) == 60 and all(m.data == b"" for m in meta)
    picked = list(
        datasets.ReadImages(pb.ReadImagesRequest(ids=[everything[3].id, everything[9].id]))
    )
    assert [m.id for m in picked] == [everything[3].id, everything[9].id]


def test_list_images_is_read_images_metadata_in_columns(datasets) -> None:
    images = [png((i, 3 * i, 11)) for i in range(40)]
    upload(datasets, [(("a", "b", "c")[i % 3], img) for i, img in enumerate(images)])
    for kw in ({}, {"split": pb.SPLIT_TRAIN, "seed": 3}, {"split": pb.SPLIT_TEST}, {"limit": 7}):
        streamed = list(
            datasets.ReadImages(
                pb.ReadImagesRequest(label_names=["c", "a"], skip_data=True, **kw)  # type: ignore[arg-type]
            )
        )
        listed = datasets.ListImages(pb.ListImagesRequest(label_names=["c", "a"], **kw))  # type: ignore[arg-type]
        assert list(listed.ids) == [m.id for m in streamed]
        assert [listed.label_names[i] for i in listed.labels] == [m.label for m in streamed]
        assert [listed.sha256[32 * i : 32 * i + 32].hex() for i in range(len(listed.ids))] == [
            m.sha256 for m in streamed
        ]
        assert list(listed.splits) == [m.split for m in streamed]
    assert len(set(listed.label_names)) == len(listed.label_names)  # each label once
    err = expect_error(CODE.INVALID_ARGUMENT, datasets.ListImages, pb.ListImagesRequest(limit=-1))
    assert {"label_names", "limit"} <= set(violations(err))
    expect_error(CODE.NOT_FOUND, datasets.ListImages, pb.ListImagesRequest(ids=[99999]))


def test_list_images_pages_through_the_same_list(datasets) -> None:
    """Issue 30: a run's data is listed a page at a time (a page reads at most 100,000
    images), and the pages together are the one-message answer."""
    images = [png((i, 5 * i, 17)) for i in range(25)]
    upload(datasets, [(("a", "b")[i % 2], img) for i, img in enumerate(images)])
    for kw in ({}, {"split": pb.SPLIT_TRAIN, "seed": 3}, {"split": pb.SPLIT_TEST, "seed": 3}):
        whole = datasets.ListImages(pb.ListImagesRequest(label_names=["a", "b"], **kw))  # type: ignore[arg-type]
        assert not whole.next_page_token
        ids, labels, token, pages = [], [], "", 0
        while True:
            page = datasets.ListImages(
                pb.ListImagesRequest(label_names=["a", "b"], page_size=4, page_token=token, **kw)  # type: ignore[arg-type]
            )
            ids += page.ids
            labels += [page.label_names[i] for i in page.labels]
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert ids == list(whole.ids) and pages >= 7  # 25 images read 4 at a time
        assert labels == [whole.label_names[i] for i in whole.labels]
    first = datasets.ListImages(pb.ListImagesRequest(label_names=["a", "b"], page_size=4))
    # A token is for the fields it was issued for, and only tokens we issued are taken.
    for request, field in (
        (pb.ListImagesRequest(label_names=["a"], page_token=first.next_page_token), "page_token"),
        (pb.ListImagesRequest(label_names=["a"], page_token="bm9wZQ=="), "page_token"),
        (pb.ListImagesRequest(label_names=["a"], page_size=-1), "page_size"),
    ):
        err = expect_error(CODE.INVALID_ARGUMENT, datasets.ListImages, request)
        assert field in violations(err)
    # `limit` bounds the pages together: 5 images of the test split, however paged.
    limited, token = [], ""
    while True:
        page = datasets.ListImages(
            pb.ListImagesRequest(
                label_names=["a", "b"],
                split=pb.SPLIT_TRAIN,
                limit=5,
                page_size=2,
                page_token=token,
            )
        )
        limited += page.ids
        token = page.next_page_token
        if not token:
            break
    train = datasets.ListImages(pb.ListImagesRequest(label_names=["a", "b"], split=pb.SPLIT_TRAIN))
    assert limited == list(train.ids)[:5]
    # Ids past a page's end are not "missing": they are in a later page.
    some = sorted(whole.ids)[:6]
    paged = datasets.ListImages(pb.ListImagesRequest(ids=some, page_size=3))
    rest = datasets.ListImages(
        pb.ListImagesRequest(ids=some, page_size=3, page_token=paged.next_page_token)
    )
    assert list(paged.ids) + list(rest.ids) == some


def test_read_and_delete_refuse_bad_requests(datasets, gateway) -> None:
    upload(datasets, [("keep", png())])
    before = snapshot(gateway.database_url)
    err = expect_error(
        CODE.INVALID_ARGUMENT, lambda: list(datasets.ReadImages(pb.ReadImagesRequest()))
    )
    assert "label_names" in violations(err)
    err = expect_error(
        CODE.INVALID_ARGUMENT,
        lambda: list(
            datasets.ReadImages(
                pb.ReadImagesRequest(label_names=["keep"], test_fraction=1.5, limit=-1)
            )
        ),
    )
    assert {"test_fraction", "limit"} <= set(violations(err))
    expect_error(
        CODE.NOT_FOUND, lambda: list(datasets.ReadImages(pb.ReadImagesRequest(ids=[99999])))
    )
    expect_error(CODE.INVALID_ARGUMENT, datasets.DeleteImages, pb.DeleteImagesRequest())
    assert snapshot(gateway.database_url) == before


def test_delete_images_by_label(datasets) -> None:
    upload(datasets, [("a", png((1, 1, 1))), ("a", png((2, 2, 2))), ("b", png((3, 3, 3)))])
    assert datasets.DeleteImages(pb.DeleteImagesRequest(label_names=["a"])).deleted == 2
    labels = datasets.ListLabels(pb.ListLabelsRequest()).labels
    assert [(label.name, label.image_count) for label in labels] == [("b", 1)]


def test_a_trainer_reads_every_page_of_its_data(gateway, datasets) -> None:
    """The trainer's listing follows `next_page_token` to the end (a run of more than a
    page of images gets all of them, in the same order)."""
    from trainer.data import ImageSource

    upload(datasets, [(("p", "q")[i % 2], png((i, 7, 7 * i))) for i in range(11)])
    with gateway.channel() as channel:
        source = ImageSource(channel, 30.0)
        whole = source.listing(["p", "q"], pb.SPLIT_ALL, 1).result()
        paged = source.listing(["p", "q"], pb.SPLIT_ALL, 1, page_size=2).result()
    assert len(whole) == 11 and paged == whole
