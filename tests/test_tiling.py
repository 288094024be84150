"""Large images by tiles: windows and what they own, prompts decoded on one window, everything merged, the store, the CLI."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch
from counting import counting
from PIL import Image
from torchvision.ops import box_iou
from typer.testing import CliRunner

from images import generated_image
from mobilesam import SAM, build_sam
from mobilesam.automatic import GeneratorOptions, SamAutomaticMaskGenerator
from mobilesam.backends import make_backend
from mobilesam.cli import app
from mobilesam.embedding_store import EmbeddingStore
from mobilesam.io.images import pixels_digest
from mobilesam.masks import rle_to_mask
from mobilesam.predictor import SamPredictor
from mobilesam.prompts import make_prompt
from mobilesam.registry import build_from_config, get_config
from mobilesam.results import Results
from mobilesam.segment import segment_prompts
from mobilesam.tasks import EverythingTask, PromptTask
from mobilesam.tiling import EDGE_MARGIN, check_tiling, embed_tiles, generate_tiled, segment_tiled, tile_windows
from mobilesam.weights import save_checkpoint
from reference import randomize

# A 256-pixel model, so a 256-pixel window is embedded at full resolution; 440 pixels are two windows a side.
TILE, HALO, SIDE = 256, 32, 440
# Window starts 0 and 184 (the last moved back to end at 440); they own [0, 220) and [220, 440).
SEAM = 220


def _discs(size: int, seed: int) -> np.ndarray:
    """A textured background with a few flat-coloured discs, one across the seam of the windows."""
    rng = np.random.default_rng(seed)
    image = generated_image(size, size, seed=seed).astype(np.int16) + rng.integers(-12, 12, (size, size, 3))
    yy, xx = np.mgrid[:size, :size]
    for cx, cy, r in [(SEAM, 100, 12), (80, 80, 15), (330, 330, 18), (120, 360, 10), (SEAM + 3, SEAM - 2, 9)]:
        image[(xx - cx) ** 2 + (yy - cy) ** 2 < r**2] = rng.integers(0, 255, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model():
    return randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed=11)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return _discs(SIDE, seed=4)


@pytest.fixture(scope="module")
def store(model, tmp_path_factory) -> EmbeddingStore:
    return EmbeddingStore(tmp_path_factory.mktemp("tiles_store"), model)


@pytest.fixture(scope="module")
def primed(model, image, store):
    """The image's four windows embedded once through the store: (tiled embedding, encoder runs it took)."""
    predictor = counting(SamPredictor(model, "torch", store))
    tiled = embed_tiles(predictor, image, TILE, HALO)
    return tiled, predictor.encoder_calls


@pytest.fixture
def predictor(model, store, primed):
    """A torch predictor on the primed store: the image's windows cost no encoder run."""
    return counting(SamPredictor(model, "torch", store))


def _hand_decoded(model, store, crop: np.ndarray, **prompt) -> tuple[np.ndarray, np.ndarray]:
    """SamPredictor by hand on a window's pixels: (masks, scores) in the window's frame."""
    hand = SamPredictor(model, "torch", store)
    hand.set_image(crop)
    masks, scores, _ = hand.predict(**prompt)
    return masks, scores


@pytest.mark.parametrize(
    ("height", "width", "tile", "halo"),
    [(440, 440, 256, 32), (600, 1000, 256, 0), (1000, 257, 256, 100), (100, 90, 256, 32), (256, 256, 256, 64), (7, 3000, 5, 2)],
)
def test_windows_cover_the_image_and_own_it_exactly_once(height, width, tile, halo):
    windows = tile_windows(height, width, tile, halo)
    owners = np.zeros((height, width), np.int64)
    covered = np.zeros((height, width), bool)
    for window in windows:
        x0, y0, x1, y1 = window.box
        ox0, oy0, ox1, oy1 = window.owned
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert window.size == (min(tile, height), min(tile, width))  # every window full size where the image is
        assert x0 <= ox0 < ox1 <= x1 and y0 <= oy0 < oy1 <= y1
        # At least `halo` of context past what it owns, wherever another window lies beyond.
        for inner, gap in ((x0 > 0, ox0 - x0), (y0 > 0, oy0 - y0), (x1 < width, x1 - ox1), (y1 < height, y1 - oy1)):
            assert not inner or gap >= halo
        owners[oy0:oy1, ox0:ox1] += 1
        covered[y0:y1, x0:x1] = True
    assert covered.all() and (owners == 1).all()
    starts = sorted({w.box[0] for w in windows})
    assert all(b - a <= tile - 2 * halo for a, b in zip(starts, starts[1:]))
    assert (len(windows) == 1) == (height <= tile and width <= tile)


def test_bad_tilings_are_clear_errors():
    with pytest.raises(ValueError, match="halo 128 is too large for tile_shape 256.*at most 127"):
        check_tiling(256, 128)
    with pytest.raises(ValueError, match="halo must be at least 0"):
        tile_windows(100, 100, 64, -1)
    with pytest.raises(ValueError, match="tile_shape must be at least 1"):
        check_tiling(0, 0)
    with pytest.raises(ValueError, match="halo 8 needs a tile_shape"):
        check_tiling(None, 8)
    check_tiling(None, 0)


def test_one_window_is_the_untiled_result_bit_for_bit(model, store):
    small = _discs(SIDE, seed=9)[:200, :240]
    predictor = counting(SamPredictor(model, "torch", store))
    objects = [
        make_prompt([[50, 60]], [1]),
        make_prompt(box=[10, 10, 120, 150]),
        make_prompt([[200, 100], [30, 30]], [1, 0], box=[150, 40, 239, 199]),
    ]
    for multimask in (False, True):
        untiled = segment_prompts(predictor, predictor.embed(small), objects, small, multimask_output=multimask)
        tiled = embed_tiles(predictor, small, TILE, HALO)
        assert len(tiled.windows) == 1
        result = segment_tiled(predictor, tiled, objects, small, multimask_output=multimask)
        assert np.array_equal(np.asarray(result.masks), np.asarray(untiled.masks))
        assert np.array_equal(result.scores, untiled.scores)
        assert np.array_equal(result.points, untiled.points) and np.array_equal(result.labels, untiled.labels)
        assert np.array_equal(result.bboxes, untiled.bboxes, equal_nan=True)
    assert predictor.encoder_calls == 1  # the window is the image: the store found it

    for mode in ("binary_mask", "uncompressed_rle"):
        generator = SamAutomaticMaskGenerator(
            model,
            points_per_side=6,
            pred_iou_thresh=0,
            stability_score_thresh=0,
            output_mode=mode,
            backend="torch",
            embeddings=store,
        )
        expected, records = generator.generate(small), generate_tiled(generator, small, TILE, HALO)
        assert len(records) == len(expected) > 0
        for ours, theirs in zip(records, expected):
            assert ours.keys() == theirs.keys()
            np.testing.assert_equal(ours, theirs)  # arrays and RLE lists alike; NaN scores of empty masks equal


def test_a_click_is_decoded_on_the_window_that_owns_it_and_placed_back(model, store, image, predictor):
    click = make_prompt([[400, 60]], [1])
    tiled = embed_tiles(predictor, image, TILE, HALO, prompts=[click])
    assert list(tiled.embeddings) == [1]  # only the window the click needs
    result = segment_tiled(predictor, tiled, [click], image, multimask_output=True)

    masks, scores = _hand_decoded(
        model, store, image[0:256, 184:440], point_coords=np.array([[216, 60]]), point_labels=np.array([1])
    )
    expected = np.zeros((3, SIDE, SIDE), bool)
    expected[:, 0:256, 184:440] = masks
    assert np.array_equal(np.asarray(result.masks), expected)
    assert np.array_equal(result.scores, scores)
    assert result.points.tolist() == [[[400.0, 60.0]]] * 3  # the prompt as given, in the image's frame
    assert predictor.encoder_calls == 0


def test_a_click_near_a_seam_goes_to_the_window_that_owns_it(image, predictor):
    for x, window in ((SEAM - 5, 0), (SEAM + 5, 1), (SEAM + 5 + 220, 3)):
        click = make_prompt([[min(x, SIDE - 1), 300 if window == 3 else 60]], [1])
        assert list(embed_tiles(predictor, image, TILE, HALO, prompts=[click]).embeddings) == [window]
    assert predictor.encoder_calls == 0


def test_a_box_across_two_windows_is_the_union_of_its_clipped_parts(model, store, image, predictor, primed):
    box = make_prompt(box=[100, 40, 400, 160])  # 300 pixels wide: no 256-pixel window holds it
    result = segment_tiled(predictor, primed[0], [box], image)

    left, left_score = _hand_decoded(model, store, image[0:256, 0:256], box=np.array([100, 40, 256, 160]), multimask_output=False)
    right, right_score = _hand_decoded(
        model, store, image[0:256, 184:440], box=np.array([0, 40, 216, 160]), multimask_output=False
    )
    # Each window counts where it owns the pixels: [0, 220) and [220, 440) across, [0, 220) down.
    left_part, right_part = left[0, :SEAM, :SEAM], right[0, :SEAM, SEAM - 184 :]
    expected = np.zeros((SIDE, SIDE), bool)
    expected[:SEAM, :SEAM] = left_part
    expected[:SEAM, SEAM:] = right_part
    assert np.array_equal(np.asarray(result.masks)[0], expected)
    areas = np.array([left_part.sum(), right_part.sum()], np.float64)
    weighted = (
        (areas * [left_score[0], right_score[0]]).sum() / areas.sum() if areas.sum() else (left_score[0] + right_score[0]) / 2
    )
    assert result.scores[0] == pytest.approx(weighted, rel=1e-6)
    assert result.bboxes.tolist() == [[100.0, 40.0, 400.0, 160.0]]

    # With a point in one window and other objects beside it, every object comes back in order, in the image's frame.
    objects = [make_prompt([[300, 100]], [1], box=[100, 40, 400, 160]), box, make_prompt([[60, 300]], [1])]
    mixed = segment_tiled(predictor, primed[0], objects, image)
    assert len(mixed) == 3 and np.isnan(mixed.points[1]).sum() == 0 and mixed.labels[1].tolist() == [-1]
    assert (np.asarray(mixed.masks)[1] == expected).mean() > 0.999  # the same box, decoded beside another
    assert predictor.encoder_calls == 0


def test_points_spread_wider_than_a_window_are_one_clear_error(image, predictor, primed):
    spread = make_prompt([[10, 60], [430, 60]], [1, 1])
    with pytest.raises(ValueError, match=r"points of one object span 420x0 pixels .* wider than a tile window \(256x256\)"):
        segment_tiled(predictor, primed[0], [spread], image)
    with pytest.raises(ValueError, match="wider than a tile window"):
        embed_tiles(predictor, image, TILE, HALO, prompts=[spread])
    with pytest.raises(ValueError, match="mask_input prompts are not taken with tiles"):
        segment_tiled(predictor, primed[0], [make_prompt([[5, 5]], [1], mask_input=np.zeros((1, 256, 256)))], image)
    assert predictor.encoder_calls == 0


def test_tiles_are_stored_and_found_without_the_encoder(model, image, store, primed, predictor):
    tiled, first_runs = primed
    assert first_runs == len(tiled.windows) == 4
    again = embed_tiles(predictor, image, TILE, HALO)
    assert predictor.encoder_calls == 0
    for index, window in enumerate(again.windows):
        assert pixels_digest(np.ascontiguousarray(window.pixels(image))) in store
        assert torch.equal(again.embedding(index).features, tiled.embedding(index).features)


@pytest.fixture
def cut_high(model):
    """The model with its mask cut-off at logit 4 instead of 0, for the test's duration.

    Random weights give window-wide blobs, which every window's inner edge cuts; cut higher, they
    are small masks inside the windows, so merging the windows has something to keep and to drop.
    """
    model.mask_threshold = 4.0
    yield model
    model.mask_threshold = 0.0


def test_everything_by_tiles_keeps_each_object_once(cut_high, image, store, primed):
    options = dict(points_per_side=6, pred_iou_thresh=0, stability_score_thresh=0, backend="torch", embeddings=store)
    generator = SamAutomaticMaskGenerator(cut_high, **options)
    counting(generator.predictor)
    records = generate_tiled(generator, image, TILE, HALO)
    assert generator.predictor.encoder_calls == 0  # the windows the prompts stored are the same windows
    windows = tile_windows(SIDE, SIDE, TILE, HALO)
    by_box = {window.box: window for window in windows}
    boxes = []
    for record in records:
        mask = record["segmentation"]
        assert mask.shape == (SIDE, SIDE) and record["area"] == mask.sum()
        x, y, w, h = record["bbox"]
        boxes.append([x, y, x + w, y + h])
        cx, cy, cw, ch = record["crop_box"]
        window = by_box[(cx, cy, cx + cw, cy + ch)]  # the window that kept it
        assert _kept_by(window, boxes[-1])
        assert cx <= record["point_coords"][0][0] <= cx + cw and cy <= record["point_coords"][0][1] <= cy + ch
    assert len({tuple(record["crop_box"]) for record in records if record["area"]}) > 1
    iou = box_iou(torch.tensor(boxes, dtype=torch.float), torch.tensor(boxes, dtype=torch.float)).fill_diagonal_(0)
    assert iou.nan_to_num(0).max() <= generator.crop_nms_thresh  # no object twice (empty masks have no IoU)

    # Against each window segmented alone: what is kept is that window's record, moved into the image; a record
    # that the window should keep is kept, or a better one over the same box is.
    kept = {(tuple(r["crop_box"]), r["predicted_iou"], tuple(r["point_coords"][0])): r for r in records}
    matched, dropped = 0, 0
    for window in windows:
        x0, y0 = window.offset
        for own in generator.generate(window.pixels(image)):
            x, y, w, h = own["bbox"]
            box = [x + x0, y + y0, x + w + x0, y + h + y0]
            key = (
                (x0, y0, *window.size[::-1]),
                own["predicted_iou"],
                (own["point_coords"][0][0] + x0, own["point_coords"][0][1] + y0),
            )
            if key in kept:
                placed = np.zeros((SIDE, SIDE), bool)
                placed[y0 : y0 + window.size[0], x0 : x0 + window.size[1]] = own["segmentation"]
                assert np.array_equal(kept[key]["segmentation"], placed) and kept[key]["bbox"] == [box[0], box[1], w, h]
                matched += 1
            elif not _kept_by(window, box):
                dropped += 1
            else:
                overlap = box_iou(torch.tensor([box], dtype=torch.float), torch.tensor(boxes, dtype=torch.float))[0]
                better = [r["predicted_iou"] >= own["predicted_iou"] for r in records]
                assert any(o > generator.crop_nms_thresh and b for o, b in zip(overlap.tolist(), better))
    assert matched == len(records) and dropped > 0  # every record is a window's; windows' cut masks were dropped

    rle_generator = SamAutomaticMaskGenerator(cut_high, **options, output_mode="uncompressed_rle")
    as_rles = generate_tiled(rle_generator, image, TILE, HALO)
    assert len(as_rles) == len(records)
    for rle, binary in zip(as_rles, records):
        assert np.array_equal(rle_to_mask(rle["segmentation"]), binary["segmentation"])
        # assert_equal: an empty mask's stability score is NaN on both sides.
        np.testing.assert_equal(
            {k: v for k, v in rle.items() if k != "segmentation"}, {k: v for k, v in binary.items() if k != "segmentation"}
        )


def _kept_by(window, box) -> bool:
    """The rule for a window's mask in segment everything: box centre owned, box clear of the window's inner edges."""
    x0, y0, x1, y1 = window.box
    ox0, oy0, ox1, oy1 = window.owned
    if not (ox0 <= (box[0] + box[2]) / 2 < ox1 and oy0 <= (box[1] + box[3]) / 2 < oy1):
        return False
    # Box corners are pixel indices, window ends are past the last pixel.
    gaps = ((x0 > 0, box[0] - x0), (y0 > 0, box[1] - y0), (x1 < SIDE, x1 - box[2]), (y1 < SIDE, y1 - box[3]))
    return all(not inner or gap > EDGE_MARGIN for inner, gap in gaps)


def test_tasks_segment_by_tiles_and_still_pickle(cut_high, image, store, predictor, primed):
    model = cut_high
    click = make_prompt([[400, 60]], [1])
    prompt_task = PromptTask((click,), tile_shape=TILE, halo=HALO)
    everything_task = EverythingTask(
        GeneratorOptions(points_per_side=2, pred_iou_thresh=0, stability_score_thresh=0), tile_shape=TILE, halo=HALO
    )
    restored = pickle.loads(pickle.dumps((prompt_task, everything_task)))
    assert [(task.tile_shape, task.halo) for task in restored] == [(TILE, HALO)] * 2 and restored[1] == everything_task
    backend = make_backend("torch", model)
    runs = counting(SamPredictor(model, backend))  # counts the encoder runs of the backend the tasks share
    from_task = prompt_task.segmenter(model, backend, store)(image, None, "wide.png")
    expected = segment_tiled(predictor, primed[0], [click], image, path="wide.png")
    assert np.array_equal(np.asarray(from_task.masks), np.asarray(expected.masks)) and from_task.path == "wide.png"
    everything = everything_task.segmenter(model, backend, store)(image, None, "wide.png")
    assert len(everything)
    generator = SamAutomaticMaskGenerator(model, **dataclasses.asdict(everything_task.options), backend="torch", embeddings=store)
    assert np.array_equal(
        np.asarray(everything.masks),
        np.asarray(Results.from_mask_records(image, generate_tiled(generator, image, TILE, HALO)).masks),
    )
    assert runs.encoder_calls == 0  # the windows were in the store
    with pytest.raises(ValueError, match="halo 4 needs a tile_shape"):
        PromptTask((click,), halo=4).segmenter(model, backend)


runner = CliRunner()


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiles_cli") / "wide.png"
    Image.fromarray(generated_image(300, 700, seed=6)).save(path)
    return path


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["predict", "-p", "5,5", "--halo", "8"], "--halo needs --tile"),
        (["predict", "-p", "5,5", "--tile", "64", "--halo", "32"], "halo 32 is too large for tile_shape 64"),
        (["everything", "--tile", "64", "--boxes", "boxes.json"], "--tile does not apply to --boxes"),
        (["everything", "--tile", "64", "--detector", "yolo.pt"], "--tile does not apply to --detector"),
    ],
)
def test_cli_tile_options_are_checked_before_any_work(photo, arguments, message):
    result = runner.invoke(app, [arguments[0], str(photo), *arguments[1:], "-o", str(photo.parent / "never")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (photo.parent / "never").exists()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A seeded random vit_t at SAM's 1024 input, as the CLI and `SAM` load models."""
    return save_checkpoint(randomize(build_sam("vit_t"), seed=12), tmp_path_factory.mktemp("tiles_model") / "vit_t.pt")


def test_cli_predict_by_tiles_embeds_only_the_clicked_window_and_keeps_the_pixel_limit(checkpoint, photo, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "wide.png").write_bytes(photo.read_bytes())
    big = photos / "big.png"
    Image.fromarray(np.zeros((500, 600, 3), np.uint8)).save(big)  # 300,000 pixels, over the limit below
    store, out = tmp_path / "store", tmp_path / "out"
    result = runner.invoke(
        app,
        ["predict", str(photos), "-m", str(checkpoint), "-p", "600,150", "--tile", "512", "--halo", "32"]
        + ["-o", str(out), "-f", "png", "--backend", "torch", "--embeddings", str(store), "--max-pixels", "250000"],
    )
    assert result.exit_code == 1, result.output  # the big image failed, the other was done
    assert "2 images: 1 written, 0 already done, 1 failed" in result.output
    assert f"image {big} is 600x500 = 300,000 pixels, over the limit of 250,000" in result.output
    [mask_file] = (out / "masks" / "wide").iterdir()
    assert Image.open(mask_file).size == (700, 300)
    # Windows start at 0 and 188 across the 700 pixels; the click at x=600 is the second window's, embedded alone.
    pixels = np.asarray(Image.open(photo).convert("RGB"))
    assert [path.stem for path in store.rglob("*.safetensors")] == [pixels_digest(np.ascontiguousarray(pixels[:, 188:700]))]


def test_sam_predict_takes_tiles_for_prompts_and_for_everything(checkpoint, photo, tmp_path):
    model = SAM(checkpoint, backend="torch", embeddings=tmp_path / "store")
    counting(model.predictor)
    pixels = np.asarray(Image.open(photo).convert("RGB"))
    [result] = model.predict(pixels, points=[600, 150], tile_shape=512, halo=32)
    assert result.masks.shape == (1, 300, 700) and model.predictor.encoder_calls == 1
    tiled = embed_tiles(model.predictor, pixels, 512, 32, prompts=[make_prompt([[600, 150]], [1])])
    expected = segment_tiled(model.predictor, tiled, [make_prompt([[600, 150]], [1])], pixels)
    assert np.array_equal(np.asarray(result.masks), np.asarray(expected.masks))
    model.predictor.encoder_calls = 0
    [again] = model.predict(points=[[550, 100], [650, 200]], tile_shape=512, halo=32)  # the same window, kept
    assert len(again) == 2 and model.predictor.encoder_calls == 0
    with pytest.raises(ValueError, match="halo 32 needs a tile_shape"):
        model.predict(pixels, points=[600, 150], halo=32)

    [everything] = model.predict(pixels, tile_shape=512, halo=32, points_per_side=2, pred_iou_thresh=0, stability_score_thresh=0)
    assert everything.masks.shape[1:] == (300, 700)
    # Both windows went through the store (windows start at 0 and 188 across 700 pixels); the whole image did not.
    windows = {pixels_digest(np.ascontiguousarray(pixels[:, x : x + 512])) for x in (0, 188)}
    assert {path.stem for path in (tmp_path / "store").rglob("*.safetensors")} == windows
