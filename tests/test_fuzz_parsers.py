"""Fuzzing of the parsers: whatever comes in, only the documented errors come out, each with a message.

Each property feeds one parser generated and mutated input (prompt arrays,
prompts files, dataset files, image files) and checks that it either returns
what its docstring promises or raises an error its `Raises:` section
documents, with a message naming the part at fault. Examples are
derandomized and none are stored, so CI runs the same inputs every time.
Inputs fuzzing found are kept: as `@example`s, or as regression tests that
check the message too.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from pycocotools import mask as mask_utils

from mobilesam.io import datasets
from mobilesam.io.datasets import DatasetError, load_dataset
from mobilesam.io.images import load_image
from mobilesam.io.sources import SourceError, read_prompts_file
from mobilesam.prompts import Prompt, as_object_prompts, check_prompt, make_prompt

MASK_INPUT_SIZE = (2, 3)
# Words of which a prompt error names at least one; numpy's own messages name none.
PROMPT_PARTS = r"point|label|box|mask|prompt"


def fuzz(max_examples: int, deadline_ms: int = 2000) -> settings:
    """Bounded for CI and reproducible: the same examples every run, none kept between runs."""
    return settings(max_examples=max_examples, deadline=deadline_ms, derandomize=True, database=None)


@contextlib.contextmanager
def only(documented: type[BaseException] | tuple[type[BaseException], ...], message: str) -> Iterator[None]:
    """Let through nothing but `documented` errors whose message matches `message`; anything else fails."""
    try:
        yield
    except documented as err:
        assert re.search(message, str(err)), f"{type(err).__name__} that names nothing: {err!r}"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder the file properties overwrite example after example (hypothesis reruns a test, not its fixtures)."""
    return tmp_path_factory.mktemp("fuzz")


# --- strategies -------------------------------------------------------------

# Numbers that break naive parsers: the bounds of int32/int64/uint64, an int no float holds, NaN, infinities.
EDGE_NUMBERS = st.sampled_from(
    [0, 1, -1, 0.5, 2**31, 2**63, 2**64, -(2**63) - 1, 10**400, 1e308, -1e308, 5e-324, math.nan, math.inf, -math.inf]
)
NUMBERS = st.one_of(st.integers(), st.floats(), EDGE_NUMBERS)
LEAVES = st.one_of(NUMBERS, st.booleans(), st.none(), st.text(max_size=4), st.sampled_from(["1.5", "nan", b"12", 1 + 2j, {}, ()]))
COORDS = st.floats(-100, 1000)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
ODD_ARRAYS = st.one_of(
    hnp.arrays(hnp.scalar_dtypes() | hnp.byte_string_dtypes(max_len=3) | hnp.unicode_string_dtypes(max_len=3), SHAPES),
    hnp.arrays(np.dtype(object), SHAPES, elements=LEAVES),
    hnp.arrays(np.float64, SHAPES, elements=COORDS),
)


def regular(shape: list[int], leaves: st.SearchStrategy) -> st.SearchStrategy:
    """Lists nested as an array of `shape`."""
    if not shape:
        return leaves
    return st.lists(regular(shape[1:], leaves), min_size=shape[0], max_size=shape[0])


def nests(leaves: st.SearchStrategy) -> st.SearchStrategy:
    """Scalars and lists nested up to 4 deep, regular (an array's shape) or ragged."""
    regulars = st.lists(st.integers(0, 4), max_size=4).flatmap(lambda shape: regular(shape, leaves))
    ragged = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4), max_leaves=12)
    return regulars | ragged


PROMPT_VALUES = st.one_of(st.none(), nests(LEAVES), nests(NUMBERS), nests(COORDS), ODD_ARRAYS)
BITS = st.sampled_from([0, 1])
LABEL_VALUES = nests(st.sampled_from([0, 1, 0.0, 1.0, 2, -1, True, 0.5, math.nan, 10**400]))


@st.composite
def boxes(draw: st.DrawFn) -> list[float]:
    """A well-formed [x1, y1, x2, y2]."""
    x, y = draw(COORDS), draw(COORDS)
    return [x, y, x + draw(st.floats(0, 500)), y + draw(st.floats(0, 500))]


@st.composite
def some_broken(draw: st.DrawFn, good: dict[str, st.SearchStrategy], junk: dict[str, st.SearchStrategy]) -> dict[str, Any]:
    """Arguments each left out (None) or well-formed, but for up to two drawn from their junk.

    One broken part at a time reaches each part's checks; all parts junk would
    stop at the first one checked.
    """
    given_parts = draw(st.sets(st.sampled_from(sorted(good))))
    broken = draw(st.sets(st.sampled_from(sorted(good)), max_size=2))
    return {part: draw(junk[part]) if part in broken else draw(good[part]) if part in given_parts else None for part in good}


@st.composite
def prompt_arguments(draw: st.DrawFn) -> dict[str, Any]:
    """`make_prompt`'s arguments."""
    n = draw(st.integers(1, 4))
    mask_shapes = st.sampled_from([MASK_INPUT_SIZE, (1, *MASK_INPUT_SIZE)])
    good = {
        "point_coords": regular([n, 2], COORDS),
        "point_labels": regular([n], BITS),
        "box": boxes() | st.lists(boxes(), min_size=1, max_size=1),
        "mask_input": hnp.arrays(np.float64, mask_shapes, elements=st.floats(-20, 20)),
    }
    junk = {
        "point_coords": PROMPT_VALUES,
        "point_labels": PROMPT_VALUES | LABEL_VALUES,
        "box": PROMPT_VALUES | st.lists(COORDS, min_size=4, max_size=4) | st.lists(boxes(), max_size=3),
        "mask_input": PROMPT_VALUES | hnp.arrays(np.float64, mask_shapes) | hnp.arrays(np.float32, mask_shapes),
    }
    return draw(some_broken(good, junk))


@st.composite
def object_prompt_arguments(draw: st.DrawFn) -> dict[str, Any]:
    """`as_object_prompts`' arguments in the Ultralytics nestings."""
    b, n = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    shape = draw(st.sampled_from([[2], [b, 2], [b, n, 2]]))
    good = {
        "points": regular(shape, COORDS),
        "labels": regular(shape[:-1], BITS),
        "bboxes": boxes() if b == 1 else st.lists(boxes(), min_size=b, max_size=b),
    }
    junk = {
        "points": PROMPT_VALUES,
        "labels": PROMPT_VALUES | LABEL_VALUES,
        "bboxes": PROMPT_VALUES | st.lists(boxes(), max_size=3),
    }
    return draw(some_broken(good, junk))


@st.composite
def mutated(draw: st.DrawFn, data: bytes, max_edits: int = 3) -> bytes:
    """`data` as it is, or truncated, or with a few bytes replaced, inserted or deleted."""
    edited = bytearray(data)
    for _ in range(draw(st.integers(0, max_edits))):
        at = draw(st.integers(0, len(edited)))
        edit = draw(st.sampled_from(["truncate", "replace", "insert", "delete"]))
        if edit == "truncate":
            del edited[at:]
        elif edit == "replace":
            edited[at : at + 1] = bytes([draw(st.integers(0, 255))])
        elif edit == "insert":
            edited[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:
            del edited[at : at + draw(st.integers(1, 8))]
    return bytes(edited)


def text_files(texts: st.SearchStrategy) -> st.SearchStrategy:
    """The texts as UTF-8, one in four with a few bytes edited (edits mostly just break the syntax)."""
    return texts.map(str.encode).flatmap(lambda data: st.one_of(*[st.just(data)] * 3, mutated(data)))


JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), EDGE_NUMBERS, st.text(max_size=6))
KEYS = st.sampled_from(["image", "points", "labels", "box", "objects", "id", "size", "counts"]) | st.text(max_size=4)
JSON_VALUES = st.recursive(
    JSON_LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=16
)
IMAGE_NAMES = st.sampled_from(["a.jpg", "sub/b.png", "/abs/c.jpg", "../up.jpg"])
ODD_IMAGE_NAMES = st.sampled_from(["", ".", "/", "sub/..", "a\x00b.jpg", "\ud800.jpg"]) | JSON_VALUES


@st.composite
def prompt_objects(draw: st.DrawFn) -> dict[str, Any]:
    """One object of a JSON prompts file; parts left out are left out of the JSON too."""
    n = draw(st.integers(1, 3))
    good = {"points": regular([n, 2], COORDS) | regular([2], COORDS), "labels": regular([n], BITS), "box": boxes()}
    junk = {
        "points": JSON_VALUES | nests(NUMBERS),
        "labels": JSON_VALUES | LABEL_VALUES,
        "box": JSON_VALUES | nests(NUMBERS),
    }
    parts = draw(some_broken(good, junk))
    if draw(st.integers(0, 5)) == 0:
        parts[draw(KEYS)] = draw(JSON_VALUES)
    return {key: value for key, value in parts.items() if value is not None}


@st.composite
def prompt_documents(draw: st.DrawFn) -> Any:
    """A JSON prompts file: a list of entries or a mapping from image to entry; now and then junk."""
    objects = prompt_objects() | JSON_VALUES
    names = st.one_of(*[IMAGE_NAMES] * 4, ODD_IMAGE_NAMES)
    entries = st.one_of(
        st.builds(lambda image, obj: {"image": image, **obj}, names, prompt_objects()),
        st.builds(
            lambda image, objs, beside: {"image": image, "objects": objs, **beside},
            names,
            st.lists(objects, max_size=3),
            st.just({}) | prompt_objects(),
        ),
        JSON_VALUES,
    )
    return draw(
        st.one_of(
            st.lists(entries, max_size=4),
            st.lists(entries, max_size=4),
            st.dictionaries(IMAGE_NAMES | st.text(max_size=4), objects, max_size=3),
            JSON_VALUES,
        )
    )


CSV_COLUMNS = ["image", "object", "x", "y", "label", "x1", "y1", "x2", "y2"]
CSV_JUNK = st.sampled_from(["", " ", "1e400", "nan", "-inf", "1_0", "0x10", '"', "\x00", "a,b", "x\ny", "1" * 400])
CSV_JUNK = CSV_JUNK | st.text(max_size=5) | st.integers().map(str) | st.floats().map(repr)
CSV_CELLS = {
    "image": st.sampled_from(["a.jpg", "b.png", "sub/c.jpg", "."]),
    "object": st.sampled_from(["", "0", "1", "cat"]),
    "label": st.sampled_from(["", "0", "1"]),
}


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    """A CSV prompts file; a row has cells missing or extra, or one cell of junk, now and then."""
    columns = st.lists(st.sampled_from(CSV_COLUMNS), unique=True).map(lambda names: ["image", *names])
    odd_columns = st.lists(st.sampled_from([*CSV_COLUMNS, "extra", "", " x ", "IMAGE"]))
    header = draw(st.one_of(columns, columns, columns, odd_columns))
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        row = [draw(CSV_CELLS.get(column, COORDS.map(str))) for column in header]
        edit = draw(st.sampled_from(["none", "none", "junk", "cut", "extend"]))
        if edit == "junk" and row:
            row[draw(st.integers(0, len(row) - 1))] = draw(CSV_JUNK)
        elif edit == "cut":
            row = row[: draw(st.integers(0, len(row)))]
        elif edit == "extend":
            row += draw(st.lists(CSV_JUNK, min_size=1, max_size=2))
        rows.append(row)
    out = io.StringIO()
    csv.writer(out).writerows([header, *rows])
    return out.getvalue()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The location of every part of a JSON document, the document itself first."""
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, part in items:
        yield from _paths(part, (*prefix, key))


DATASET_JUNK = st.one_of(
    JSON_VALUES,
    st.sampled_from([0, -1, -(2**31), 2**31, 2**32 + 1, 2**64, 10**400, 1e308, 4.0, 0.5, math.nan, math.inf]),
    st.sampled_from(["", "7", True]),
    st.integers(-1, 9),
    st.lists(st.integers(-5, 20), max_size=9),
    st.lists(st.floats(), min_size=4, max_size=7),
    # The alphabet of compressed RLE counts.
    st.text(st.characters(min_codepoint=48, max_codepoint=111), max_size=8),
)


@st.composite
def mutated_tree(draw: st.DrawFn, document: Any) -> Any:
    """A copy of `document` with up to 3 of its parts (not the whole) replaced by junk or deleted.

    The part is drawn depth first, so that the few keys near the root are
    hit as often as the many numbers of masks deep down.
    """
    document = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(0, 3))):
        by_depth: dict[int, list[tuple[Any, ...]]] = {}
        for path in _paths(document):
            by_depth.setdefault(len(path), []).append(path)
        del by_depth[0]
        if not by_depth:
            break
        path = draw(st.sampled_from(by_depth[draw(st.sampled_from(sorted(by_depth)))]))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            parent[path[-1]] = draw(DATASET_JUNK)
        else:
            del parent[path[-1]]
    return document


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE: run lengths down the columns, zeros first."""
    flat = mask.ravel(order="F").astype(np.int8)
    ends = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], ends, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": [0, *counts] if flat[0] else counts}


def _compressed_rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


@st.composite
def segmentations(draw: st.DrawFn, height: int, width: int, polygons: bool = True) -> Any:
    """A well-formed segmentation of a (height, width) image: polygons, uncompressed or compressed RLE."""
    mask = draw(hnp.arrays(np.bool_, (height, width)))
    kinds = ["uncompressed", "compressed"] + ["polygons"] * polygons
    kind = draw(st.sampled_from(kinds))
    if kind == "polygons":
        vertices = st.lists(st.tuples(st.floats(0, width), st.floats(0, height)), min_size=3, max_size=5)
        return [[v for xy in draw(vertices) for v in xy] for _ in range(draw(st.integers(1, 2)))]
    return _uncompressed_rle(mask) if kind == "uncompressed" else _compressed_rle(mask)


@st.composite
def coco_documents(draw: st.DrawFn) -> Any:
    images, annotations = [], []
    for image_id in range(1, draw(st.integers(1, 3)) + 1):
        height, width = draw(st.integers(1, 8)), draw(st.integers(1, 8))
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": height, "width": width})
        for _ in range(draw(st.integers(1, 2))):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": draw(st.sampled_from([1, 2])),
                    "iscrowd": draw(st.sampled_from([0] * 7 + [1])),
                    "segmentation": draw(segmentations(height, width)),
                }
            )
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    return draw(mutated_tree({"images": images, "annotations": annotations, "categories": categories}))


@st.composite
def sa1b_documents(draw: st.DrawFn) -> Any:
    height, width = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    image = {"image_id": 1, "file_name": "sa_1.jpg", "height": height, "width": width}
    rles = [draw(segmentations(height, width, polygons=False)) for _ in range(draw(st.integers(1, 3)))]
    annotations = [{"id": index, "segmentation": rle, "area": 1, "bbox": [0, 0, 1, 1]} for index, rle in enumerate(rles)]
    return draw(mutated_tree({"image": image, "annotations": annotations}))


def _encoded(image: Image.Image, image_format: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, image_format, **options)
    return out.getvalue()


# Modes each format writes, the odd ones included.
IMAGE_MODES = {
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "WEBP": ["RGB", "RGBA"],
}


@st.composite
def image_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, contents): a small PNG, JPEG or WebP in one of its modes, maybe with an EXIF orientation, mutated."""
    image_format = draw(st.sampled_from(sorted(IMAGE_MODES)))
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    pixels = draw(hnp.arrays(np.uint8, (height, width, 3)))
    image = Image.fromarray(pixels).convert(draw(st.sampled_from(IMAGE_MODES[image_format])))
    options = {}
    if draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(0, 9))  # orientation; 1-8 are defined
        options["exif"] = exif.tobytes()
    data = draw(mutated(_encoded(image, image_format, **options)) | st.binary(max_size=64))
    return f".{image_format.lower()}", data


IMAGE_FILES = image_files()


# --- prompts ----------------------------------------------------------------


def _assert_checked(prompt: Prompt) -> None:
    """`prompt` holds what `Prompt` documents."""
    if prompt.point_coords is None:
        assert prompt.point_labels is None
    else:
        coords, labels = prompt.point_coords, prompt.point_labels
        assert coords.dtype == np.float64 and coords.ndim == 2 and coords.shape[1] == 2 and len(coords) >= 1
        assert np.isfinite(coords).all()
        assert labels.dtype == np.int64 and labels.shape == (len(coords),) and set(labels.tolist()) <= {0, 1}
    if prompt.box is not None:
        box = prompt.box
        assert box.dtype == np.float64 and box.shape == (4,) and np.isfinite(box).all()
        assert box[0] <= box[2] and box[1] <= box[3]
    if prompt.mask_input is not None:
        mask = prompt.mask_input
        assert mask.dtype == np.float32 and mask.shape == (1, *MASK_INPUT_SIZE) and np.isfinite(mask).all()


@fuzz(400)
@given(prompt_arguments())
def test_make_prompt_gives_a_checked_prompt_or_a_value_error(arguments):
    with only(ValueError, PROMPT_PARTS):
        _assert_checked(make_prompt(**arguments, mask_input_size=MASK_INPUT_SIZE))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        # Found by fuzzing; each comment says what happened before.
        # OverflowError:
        (dict(point_coords=[[10**400, 1]], point_labels=[1]), "point_coords must be numbers"),
        # numpy's "setting an array element with a sequence":
        (dict(point_coords=[[1, 2]], point_labels=[[1], [0, 1]]), "point labels must be numbers nested as an array"),
        # Taken, as inf:
        (dict(mask_input=np.full(MASK_INPUT_SIZE, 1e308)), "mask_input holds 1e[+]308, beyond float32"),
        # Taken, the imaginary part dropped, or dates counted in days:
        (dict(point_coords=np.array([[1 + 1j, 2]]), point_labels=[1]), "point_coords must be real numbers, got dtype complex"),
        (dict(point_coords=np.array([["2020-01-01", "2020-01-02"]], "datetime64[D]"), point_labels=[1]), "dtype datetime64"),
        (dict(point_coords=[[1, 2]], point_labels=np.array([1 + 0j])), "point labels must be numbers 1 .* dtype complex"),
    ],
)
def test_prompts_fuzzing_broke_are_value_errors(arguments, message):
    with pytest.raises(ValueError, match=message):
        make_prompt(**arguments, mask_input_size=MASK_INPUT_SIZE)


@fuzz(300)
@given(prompt_arguments(), st.tuples(st.integers(1, 10**5), st.integers(1, 10**5)))
def test_check_prompt_gives_a_prompt_inside_the_image_or_a_value_error(arguments, image_hw):
    with only(ValueError, PROMPT_PARTS):
        prompt = check_prompt(image_hw, MASK_INPUT_SIZE, **arguments)
        _assert_checked(prompt)
        h, w = image_hw
        corners = [prompt.point_coords, None if prompt.box is None else prompt.box.reshape(2, 2)]
        for xy in filter(lambda xy: xy is not None, corners):
            assert (xy >= (-w, -h)).all() and (xy <= (2 * w, 2 * h)).all()


@fuzz(400)
@given(object_prompt_arguments())
@example({"points": [[1, 2], [3, 4]], "labels": [[1], [0, 1]], "bboxes": None})
@example({"points": None, "labels": None, "bboxes": [[1, 2, 3, 4], [1, 2]]})
@example({"points": [1, 2], "labels": None, "bboxes": [[10**400, 1, 2, 3]]})
def test_as_object_prompts_gives_alike_objects_or_a_value_error(arguments):
    with only(ValueError, PROMPT_PARTS):
        objects = as_object_prompts(**arguments)
        assert objects
        for prompt in objects:
            _assert_checked(prompt)
        assert len({0 if p.point_coords is None else len(p.point_coords) for p in objects}) == 1
        assert len({p.box is None for p in objects}) == 1


# --- prompts files ----------------------------------------------------------


def _read_prompts(scratch: Path, suffix: str, data: bytes) -> None:
    """`read_prompts_file` on `data`: jobs with checked objects, or a `SourceError` naming the file."""
    path = scratch / f"prompts{suffix}"
    path.write_bytes(data)
    with only(SourceError, "^" + re.escape(str(path))):
        jobs = read_prompts_file(path)
        assert jobs
        for job in jobs:
            assert job.objects and job.stem
            for prompt in job.objects:
                _assert_checked(prompt)


@fuzz(300)
@given(text_files(prompt_documents().map(json.dumps)))
@example(b'[{"image": "a.jpg", "points": [[1, ' + b"1" * 5000 + b"]]}]")
@example(b"[" * 100_000)
@example(b'[{"image": "a.jpg", "points": [[1' + b"0" * 400 + b", 2]]}]")
@example(b'\xef\xbb\xbf[{"image": "a.jpg", "box": [1, 2, 3, 4]}]')
@example(b'[{"points": [0.0, 0.0], "image": "."}]')
@example(b'{"sub/..": {"box": [1, 2, 3, 4]}}')
@example(b'[{"image": "a.jpg", "box": [1, 2, 3, \xff]}]')
def test_json_prompts_files_give_jobs_or_a_source_error(scratch, data):
    _read_prompts(scratch, ".json", data)


@fuzz(300)
@given(text_files(csv_texts()))
@example(b'image,x,y\n"' + b"a" * 200_000 + b'",1,2\n')
@example(b"image,x,y\na.jpg,1,2,3,4,5\nb.jpg\n")
@example(b'image,x,y\n"a.jpg,1,2\n')
def test_csv_prompts_files_give_jobs_or_a_source_error(scratch, data):
    _read_prompts(scratch, ".csv", data)


# --- datasets ---------------------------------------------------------------


@contextlib.contextmanager
def small_masks() -> Iterator[None]:
    """`MAX_MASK_PIXELS` cut to 4096, so that junk sizes past the check never allocate more than a few KiB."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets, "MAX_MASK_PIXELS", 4096)
        yield


def _read_dataset(data: Path, images: Path) -> None:
    """`load_dataset`, then every mask: each the size of its instance, or a `DatasetError` naming the file or instance."""
    with only(DatasetError, re.escape(str(data)) + r"|^instance \S+: "):
        dataset = load_dataset(data, images)
        assert dataset.num_instances > 0
        for image in dataset:
            for instance in image.instances:
                mask = instance.mask()
                assert mask.dtype == np.bool_ and mask.shape == (instance.height, instance.width)


@fuzz(250)
@given(text_files(coco_documents().map(json.dumps)))
@example(b'{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [' + b"[" * 100_000 + b"]}")
@example(b'{"images": [{"id": ' + b"1" * 5000 + b', "file_name": "a.jpg"}]}')
def test_coco_files_give_masks_or_a_dataset_error(scratch, data):
    path = scratch / "coco.json"
    path.write_bytes(data)
    with small_masks():
        _read_dataset(path, scratch)


def _coco(image: dict[str, Any], segmentation: Any) -> dict[str, Any]:
    """A COCO document of one image and one annotation."""
    annotation = {"id": 1, "image_id": 1, "segmentation": segmentation}
    return {"images": [{"id": 1, "file_name": "a.jpg", **image}], "annotations": [annotation]}


def _sa1b(segmentation: Any) -> dict[str, Any]:
    """An SA-1B document of one annotation."""
    return {"image": {"file_name": "a.jpg"}, "annotations": [{"id": 1, "segmentation": segmentation}]}


SQUARE = {"height": 4, "width": 4}
TRIANGLE = [[1, 1, 3, 1, 3, 3]]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        # Found by fuzzing; each comment says what happened before.
        # OverflowError:
        (_coco(SQUARE, {"size": [4, 4], "counts": [-1, 17]}), "instance 1: .*RLE counts must be integers >= 0"),
        (_coco({"height": math.inf, "width": 4}, TRIANGLE), "annotation 1: its image's height must be an integer, got inf"),
        (_coco({"height": -4, "width": 4}, TRIANGLE), "annotation 1: its image's size 4x-4 is out of range"),
        (_sa1b({"size": [-1, 4], "counts": "0"}), "annotation 1: RLE size 4x-1 is out of range"),
        # pycocotools' bare Exception("input type is not supported"):
        (_coco(SQUARE, [[1, 2, 3]]), "instance 1: .*a polygon needs 3 or more x, y pairs, got 3"),
        # Taken for a box by pycocotools: "Argument 'bb' has incorrect type":
        (_coco(SQUARE, [[1, 2, 3, 4]]), "a polygon needs 3 or more x, y pairs, got 4"),
        # A segfault in pycocotools:
        (_coco(SQUARE, [[1e12, 0, 3, 3, 0, 3]]), "a polygon has a vertex far outside its 4x4 image"),
        # 10 GB to allocate and fill: MemoryError or a stall:
        (_sa1b({"size": [10**5, 10**5], "counts": "0"}), "annotation 1: RLE size 100000x100000 is out of range"),
        # TypeError:
        (_coco({"id": [1]}, TRIANGLE), "every image needs 'id' and 'file_name'"),
        (_coco({**SQUARE, "file_name": 7}, TRIANGLE), "every image needs 'id' and 'file_name'"),
        (_sa1b({"size": 4, "counts": "0"}), "annotation 1: RLE 'size' must be \\[height, width\\]"),
        # KeyError:
        ({"images": [], "categories": [{"name": "cat"}]}, "category 'id' must be an integer, got None"),
        # AttributeError:
        ({"images": [], "annotations": [7]}, "'annotations' must be a list of objects"),
        ({"image": {"file_name": "a.jpg"}, "annotations": ["junk"]}, "'annotations' must be a list of objects"),
        # pycocotools' "Expected bytes, got int":
        (_sa1b({"size": [4, 4], "counts": 7}), "annotation 1: RLE 'counts' must be a string or a list"),
    ],
)
def test_datasets_fuzzing_broke_are_dataset_errors(tmp_path, document, message):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(document))
    with pytest.raises(DatasetError, match=message):
        for image in load_dataset(path):
            for instance in image.instances:
                instance.mask()


@fuzz(200)
@given(sa1b_documents(), st.booleans())
def test_sa1b_files_and_folders_give_masks_or_a_dataset_error(scratch, document, as_folder):
    folder = scratch / "sa1b"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    path = folder / "sa_1.json"
    path.write_text(json.dumps(document))
    with small_masks():
        _read_dataset(folder if as_folder else path, scratch)


def test_a_mask_size_past_the_limit_is_refused_before_any_decoding(tmp_path):
    side = math.isqrt(datasets.MAX_MASK_PIXELS) + 1
    path = tmp_path / "sa_1.json"
    path.write_text(json.dumps(_sa1b({"size": [side, side], "counts": "0"})))
    with pytest.raises(DatasetError, match=f"annotation 1: RLE size {side}x{side} is out of range"):
        load_dataset(path)


@st.composite
def mask_pngs(draw: st.DrawFn) -> bytes:
    """A small PNG mask in one of the modes a tool may write, maybe mutated."""
    mask = draw(hnp.arrays(np.uint8, (draw(st.integers(1, 8)), draw(st.integers(1, 8)))))
    image = Image.fromarray(mask).convert(draw(st.sampled_from(IMAGE_MODES["PNG"])))
    return draw(mutated(_encoded(image, "PNG")) | st.binary(max_size=64))


@fuzz(200)
@given(st.lists(st.tuples(st.sampled_from(["a", "a", "b/c", ".hidden", "."]), mask_pngs()), min_size=1, max_size=3))
def test_png_mask_folders_give_masks_or_a_dataset_error(scratch, masks):
    folder = scratch / "png"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for index, (stem, data) in enumerate(masks):
        (folder / stem).mkdir(parents=True, exist_ok=True)
        (folder / stem / f"{index:03d}.png").write_bytes(data)
    _read_dataset(folder, scratch)


def test_a_png_mask_too_large_for_pil_is_a_dataset_error(tmp_path):
    # A valid header of 30000 x 30000 pixels: PIL refuses it at open with DecompressionBombError,
    # which is no OSError and came through unwrapped before.
    header = Image.new("1", (1, 1))
    data = bytearray(_encoded(header, "PNG"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = (30000).to_bytes(4, "big") * 2
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = crc.to_bytes(4, "big")
    (tmp_path / "masks" / "a").mkdir(parents=True)
    (tmp_path / "masks" / "a" / "000.png").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="cannot read mask .*000.png"):
        load_dataset(tmp_path / "masks", tmp_path)


# --- images -----------------------------------------------------------------


@fuzz(300)
@given(IMAGE_FILES)
@example((".webp", b"h"))  # shorter than BMP's magic: Pillow's `accept` raised struct.error
@example((".jpeg", b""))
def test_image_files_give_rgb_arrays_or_a_value_error(scratch, suffix_and_data):
    suffix, data = suffix_and_data
    path = scratch / f"image{suffix}"
    path.write_bytes(data)
    with only(ValueError, re.escape(str(path))):
        rgb = load_image(path)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.size


@fuzz(100)
@given(IMAGE_FILES)
def test_image_bytes_give_rgb_arrays_or_a_documented_error(suffix_and_data):
    with only((ValueError, TypeError), "image"):
        rgb = load_image(suffix_and_data[1])
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
