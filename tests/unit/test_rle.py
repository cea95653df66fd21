"""The SIIM run-length codec against the real label file, hand-worked cases and random masks."""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ptxseg.io import rle


def reference_decode(encoded: str, height: int, width: int) -> np.ndarray:
    """The competition's own rle2mask, as a plain loop: the ground truth for the format."""
    mask = np.zeros(width * height, dtype=bool)
    if encoded.strip() != "-1":
        values = [int(v) for v in encoded.split()]
        position = 0
        for start, length in zip(values[0::2], values[1::2], strict=True):
            position += start
            mask[position : position + length] = True
            position += length
    return mask.reshape(width, height).T


def real_rows(real_data) -> list[tuple[str, str]]:
    with gzip.open(real_data / "labels" / "siim-train-rle.csv.gz", "rt", newline="") as handle:
        reader = csv.reader(handle)
        assert [name.strip() for name in next(reader)] == ["ImageId", "EncodedPixels"]
        return [(row[0], row[1]) for row in reader]


@pytest.mark.realdata
def test_every_real_row_round_trips(real_data):
    rows = real_rows(real_data)
    assert len(rows) == 12954
    by_image = defaultdict(list)
    for image_id, encoded in rows:
        by_image[image_id].append(encoded)
    assert len(by_image) == 12047
    checked_exact = 0
    for encoded_rows in by_image.values():
        for encoded in encoded_rows:
            mask = rle.decode(encoded)
            assert mask.shape == (1024, 1024) and mask.dtype == bool
            again = rle.encode(mask)
            assert np.array_equal(rle.decode(again), mask)
            if len(encoded_rows) == 1:
                assert again == encoded.strip()
                checked_exact += 1
    assert checked_exact > 11000


@pytest.mark.realdata
def test_real_rows_match_the_competition_decoder(real_data):
    positives = [encoded for _, encoded in real_rows(real_data) if encoded.strip() != "-1"][:300]
    for encoded in positives:
        assert np.array_equal(rle.decode(encoded), reference_decode(encoded, 1024, 1024))


def test_hand_worked_column_major_example():
    # 3 rows x 4 columns; flat column-major order runs down each column first.
    mask = np.array(
        [
            [1, 0, 0, 0],
            [1, 0, 0, 1],
            [0, 1, 0, 1],
        ],
        dtype=bool,
    )
    # flat: col0 = 1 1 0, col1 = 0 0 1, col2 = 0 0 0, col3 = 0 1 1
    # runs at 0 (len 2), 5 (len 1), 10 (len 2, ends on the last pixel)
    assert rle.encode(mask) == "0 2 3 1 4 2"
    assert np.array_equal(rle.decode("0 2 3 1 4 2", (3, 4)), mask)


@settings(max_examples=150, deadline=None)
@given(
    # (3, 64) and (5, 128): chunks of columns that are not whole 32-bit words.
    st.sampled_from([(64, 64), (128, 256), (1024, 1024), (3, 64), (5, 128)]),
    st.lists(st.tuples(st.integers(0, 2**20), st.integers(1, 5000)), max_size=6),
)
def test_sparse_runs_in_chunked_masks(shape, runs):
    # Shapes whose columns split into chunks: the encoder searches only the span of chunks that
    # hold pixels, so runs on chunk edges, far apart, or up to the image end must all come out.
    height, width = shape
    n = height * width
    flat = np.zeros(n, dtype=bool)
    for start, length in runs:
        flat[start % n : start % n + length] = True
    mask = flat.reshape(width, height).T
    encoded = rle.encode(mask)
    assert np.array_equal(reference_decode(encoded, height, width), mask)
    assert rle.encode(np.ascontiguousarray(mask)) == encoded
    assert np.array_equal(rle.decode(encoded, shape), mask)


@pytest.mark.parametrize(
    "rows",
    [
        slice(300, 420),  # inside: the rows above and below the box are the image's own
        slice(0, 40),  # on the first row: the box needs an empty row above
        slice(1000, 1024),  # on the last row: and one below
        slice(0, 1024),  # whole columns: runs go on from one column into the next
    ],
)
def test_regions_on_the_image_edges(rows):
    # The encoder compares only the bounding box of the mask, padded where it meets the image
    # edge; each placement below takes another way through it.
    mask = np.zeros((1024, 1024), dtype=bool)
    mask[rows, 500:530] = True
    mask[rows.start + 5 : rows.start + 9, 700] = True  # a second region, far right
    mask[rows.stop - 1, 531] = True  # a lone pixel on the box's last row
    expected = _loop_encode(mask)
    assert rle.encode(mask) == expected  # row-major: searched by rows, the box transposed
    assert rle.encode(np.asfortranarray(mask)) == expected  # column-major: searched in place
    spaced = np.zeros((1024, 2048), dtype=bool)
    spaced[:, ::2] = mask
    assert rle.encode(spaced[:, ::2]) == expected  # neither layout: a strided view
    assert np.array_equal(rle.decode(expected), mask)


def _loop_encode(mask: np.ndarray) -> str:
    """Runs of the column-major pixels, found one pixel at a time: the ground truth to encode."""
    values, previous_end, run_start = [], 0, None
    for position, inside in enumerate([*mask.T.ravel().tolist(), False]):
        if inside and run_start is None:
            run_start = position
        elif not inside and run_start is not None:
            values += [run_start - previous_end, position - run_start]
            previous_end, run_start = position, None
    return " ".join(map(str, values)) if values else "-1"


def test_images_without_pixels_encode_empty():
    for shape in [(0, 0), (0, 8), (8, 0)]:
        assert rle.encode(np.zeros(shape, dtype=bool)) == "-1"
        assert rle.decode("-1", shape).shape == shape


def test_empty_and_full_masks():
    assert rle.encode(np.zeros((5, 7), dtype=bool)) == "-1"
    assert rle.decode("-1", (5, 7)).sum() == 0
    assert rle.decode(" -1 ", (5, 7)).sum() == 0
    full = np.ones((5, 7), dtype=bool)
    assert rle.encode(full) == "0 35"
    assert rle.decode("0 35", (5, 7)).all()


def test_last_pixel_is_encoded():
    mask = np.zeros((1024, 1024), dtype=bool)
    mask[-1, -1] = True
    assert rle.encode(mask) == f"{1024 * 1024 - 1} 1"
    assert rle.decode(rle.encode(mask))[-1, -1]


def test_union_of_rows_is_the_or_of_the_masks():
    a = np.zeros((16, 16), dtype=bool)
    b = np.zeros((16, 16), dtype=bool)
    a[2:6, 3:9] = True
    b[4:10, 7:12] = True  # overlaps a
    union = rle.decode_union([rle.encode(a), rle.encode(b)], (16, 16))
    assert np.array_equal(union, a | b)
    assert rle.decode_union(["-1", rle.encode(b)], (16, 16)).sum() == b.sum()
    assert rle.decode_union([], (16, 16)).sum() == 0


@given(st.lists(arrays(bool, (24, 40)), min_size=1, max_size=4))
def test_union_of_random_rows(parts):
    union = rle.decode_union([rle.encode(part) for part in parts], (24, 40))
    assert np.array_equal(union, np.logical_or.reduce(parts))
    assert union.flags.writeable


def test_rows_of_many_runs_decode():
    # Every other pixel: 2**19 runs, more values than the decoder keeps a gap/run pattern for.
    mask = np.zeros((1024, 1024), dtype=bool)
    mask[::2] = True
    encoded = rle.encode(mask)
    assert encoded.startswith("0 1 1 1 ") and len(encoded.split()) == 2**20
    assert np.array_equal(rle.decode(encoded), mask)


def test_non_boolean_masks_are_binarised():
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[1:3, 2] = 255
    assert rle.encode(mask) == rle.encode(mask.astype(bool)) == "17 2"
    with pytest.raises(ValueError, match="2-D"):
        rle.encode(np.zeros((2, 2, 2)))


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        ("1 2 3", "odd number of values"),
        ("-4 2", "negative start"),
        ("3 -2", "length -2 below 1"),
        ("3 0", "length 0 below 1"),
        ("1.5 2", "non-integer value '1.5'"),
        ("12 ab", "non-integer value 'ab'"),
        ("0x10 2", "non-integer value '0x10'"),
        ("1048570 10", "past the image end"),
        ("1000000 40000 8576 1", "run 1 ends at pixel 1048577, past the image end"),
        # Past the int64 range: numpy's parser saturates, sums would wrap round.
        ("99999999999999999999 1", "value 99999999999999999999 larger than any image"),
        ("1 9223372036854775807", "value 9223372036854775807 larger than any image"),
        ("+1 -99999999999999999999", "value -99999999999999999999 larger than any image"),
    ],
)
def test_malformed_strings_raise_value_error_naming_the_problem(encoded, message):
    with pytest.raises(ValueError, match=message):
        rle.decode(encoded)


def test_area_counts_pixels():
    assert rle.area("0 2 3 1 4 2") == 5
    assert rle.area("-1") == 0


@st.composite
def masks(draw):
    height = draw(st.integers(1, 40))
    width = draw(st.integers(1, 40))
    mask = draw(arrays(np.bool_, (height, width)))
    if draw(st.booleans()):
        mask[-1, -1] = True  # the last pixel, which the competition snippet dropped
    layout = draw(st.sampled_from(["C", "F", "strided"]))
    if layout == "F":
        mask = np.asfortranarray(mask)
    elif layout == "strided":
        spaced = np.zeros((height, 2 * width), dtype=bool)
        spaced[:, ::2] = mask
        mask = spaced[:, ::2]
    return mask


@settings(max_examples=400, deadline=None)
@given(masks())
def test_random_masks_round_trip(mask):
    encoded = rle.encode(mask)
    decoded = rle.decode(encoded, mask.shape)
    assert np.array_equal(decoded, mask)
    assert np.array_equal(reference_decode(encoded, *mask.shape), mask)
    if mask.any():
        values = [int(v) for v in encoded.split()]
        assert all(v > 0 for v in values[1::2])  # no empty runs
        assert all(v > 0 for v in values[2::2])  # runs never touch: they would be one run
    else:
        assert encoded == "-1"


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 64), st.integers(1, 64), st.data())
def test_random_large_runs_at_any_offset(height, width, data):
    # A run from any pixel to any later one: across column edges, from the first pixel, to the last.
    n = height * width
    start = data.draw(st.integers(0, n - 1))
    length = data.draw(st.integers(1, n - start))
    flat = np.zeros(n, dtype=bool)
    flat[start : start + length] = True
    mask = flat.reshape(width, height).T
    assert rle.encode(mask) == f"{start} {length}"
    assert rle.encode(np.ascontiguousarray(mask)) == f"{start} {length}"
