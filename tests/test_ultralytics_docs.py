"""The code of Ultralytics' SAM and MobileSAM docs, run unchanged but for its import line.

The examples are pasted as the pages show them (`from ultralytics import SAM`
becomes `from mobilesam import SAM` when they run):

- https://docs.ultralytics.com/models/mobile-sam/ "Point Prompt", and its "Box
  Prompt" as the page had it before the box example became a copy of the point
  one (ultralytics/ultralytics, docs/en/models/mobile-sam.md).
- https://docs.ultralytics.com/models/sam/ "Segment with prompts" (the revision
  that passes the image on every call; the current one calls `model(points=...)`
  without a source) and "Segment everything".
- https://docs.ultralytics.com/modes/predict/#working-with-results: the
  attributes of `Results`, `Boxes` and `Masks` that its tables list, read on a
  result of the MobileSAM page's point prompt.

No weights can be downloaded: each test runs in a folder of its own holding a
seeded random vit_t saved as "mobile_sam.pt", the same file as "sam_b.pt" (the
SAM page's name; these tests are about the API, and a random vit_b would only
make them slower), and a generated 1280x720 photo at the paths the docs read.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from images import generated_image
from mobilesam import build_sam
from mobilesam.weights import save_checkpoint
from reference import randomize

MOBILE_SAM_POINT_PROMPT = """
from ultralytics import SAM

# Load the model
model = SAM("mobile_sam.pt")

# Predict a segment based on a single point prompt
model.predict("ultralytics/assets/zidane.jpg", points=[900, 370], labels=[1])

# Predict multiple segments based on multiple points prompt
model.predict("ultralytics/assets/zidane.jpg", points=[[400, 370], [900, 370]], labels=[1, 1])

# Predict a segment based on multiple points prompt per object
model.predict("ultralytics/assets/zidane.jpg", points=[[[400, 370], [900, 370]]], labels=[[1, 1]])

# Predict a segment using both positive and negative prompts.
model.predict("ultralytics/assets/zidane.jpg", points=[[[400, 370], [900, 370]]], labels=[[1, 0]])
"""

MOBILE_SAM_BOX_PROMPT = """
from ultralytics import SAM

# Load the model
model = SAM("mobile_sam.pt")

# Predict a segment based on a box prompt
model.predict("ultralytics/assets/zidane.jpg", bboxes=[439, 437, 524, 709])
"""

SAM_SEGMENT_WITH_PROMPTS = """
from ultralytics import SAM

# Load a model
model = SAM('sam_b.pt')

# Display model information (optional)
model.info()

# Run inference with bboxes prompt
model('ultralytics/assets/zidane.jpg', bboxes=[439, 437, 524, 709])

# Run inference with points prompt
model('ultralytics/assets/zidane.jpg', points=[900, 370], labels=[1])
"""

SAM_SEGMENT_EVERYTHING = """
from ultralytics import SAM

# Load a model
model = SAM("sam_b.pt")

# Display model information (optional)
model.info()

# Run inference
model("path/to/image.jpg")
"""

PHOTO_PATHS = ("ultralytics/assets/zidane.jpg", "path/to/image.jpg")
H, W = 720, 1280


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "mobile_sam.pt"
    return save_checkpoint(randomize(build_sam("vit_t"), seed=3), path)


@pytest.fixture
def docs_folder(tmp_path, monkeypatch, checkpoint):
    """The working folder the docs' code expects: weights and photos at their relative paths."""
    shutil.copyfile(checkpoint, tmp_path / "mobile_sam.pt")
    shutil.copyfile(checkpoint, tmp_path / "sam_b.pt")
    for relative in PHOTO_PATHS:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(generated_image(H, W, seed=7)).save(tmp_path / relative, quality=95)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_docs_code(code: str) -> dict:
    """Execute a docs example with only its import line changed; returns its variables."""
    assert code.count("from ultralytics import SAM\n") == 1
    namespace: dict = {}
    ours = code.replace("from ultralytics import SAM\n", "from mobilesam import SAM\n")
    exec(compile(ours, "<docs>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize(
    "code",
    [MOBILE_SAM_POINT_PROMPT, MOBILE_SAM_BOX_PROMPT, SAM_SEGMENT_WITH_PROMPTS],
    ids=["mobile-sam-points", "mobile-sam-box", "sam-prompts"],
)
def test_prompt_examples_run_unchanged(docs_folder, code):
    namespace = run_docs_code(code)
    results = namespace["model"].predict("ultralytics/assets/zidane.jpg", points=[900, 370], labels=[1])
    assert len(results) == 1 and results[0].masks.data.shape == (1, H, W)


@pytest.mark.slow
def test_segment_everything_example_runs_unchanged(docs_folder, capsys):
    # The default 32 x 32 grid on a 1280 x 720 image: 40 s or more on two CPU cores.
    run_docs_code(SAM_SEGMENT_EVERYTHING)
    assert "total" in capsys.readouterr().out


def test_results_attributes_as_the_predict_page_lists_them(docs_folder, capsys):
    from mobilesam import SAM

    model = SAM("mobile_sam.pt")
    results = model.predict("ultralytics/assets/zidane.jpg", points=[[400, 370], [900, 370]], labels=[1, 1])

    # View results
    for r in results:
        print(r.boxes)  # print the Boxes object containing the detection bounding boxes
    for r in results:
        print(r.masks)  # print the Masks object containing the detected instance masks
    assert "Boxes(" in capsys.readouterr().out

    r = results[0]
    assert r.orig_img.shape == (H, W, 3) and r.orig_shape == (H, W) and r.path == "ultralytics/assets/zidane.jpg"
    assert len(r) == 2
    masks, boxes = r.masks, r.boxes

    assert isinstance(masks.data, torch.Tensor) and masks.data.dtype == torch.bool and masks.data.shape == (2, H, W)
    assert masks.shape == (2, H, W) and masks.orig_shape == (H, W)
    for tensor in (boxes.xyxy, boxes.conf, boxes.cls, boxes.xywh, boxes.xyxyn, boxes.xywhn, boxes.data):
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    assert boxes.data.shape == (2, 6) and boxes.id is None
    torch.testing.assert_close(boxes.data[:, :4], boxes.xyxy)
    torch.testing.assert_close(boxes.conf, torch.from_numpy(r.scores))
    assert torch.equal(boxes.cls, torch.arange(2.0))  # Ultralytics' SAM numbers the masks: names {0: '0', 1: '1'}
    assert r.names == {0: "0", 1: "1"}

    for mask, xyxy, xywh, xyxyn, xywhn in zip(masks.data, boxes.xyxy, boxes.xywh, boxes.xyxyn, boxes.xywhn):
        ys, xs = np.nonzero(mask.numpy())
        if not len(xs):
            continue
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
        assert xyxy.tolist() == [x1, y1, x2, y2]
        assert xywh.tolist() == [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]  # centre, as Ultralytics
        np.testing.assert_allclose(xyxyn.numpy(), [x1 / W, y1 / H, x2 / W, y2 / H], rtol=1e-6)
        np.testing.assert_allclose(xywhn.numpy(), xywh.numpy() / [W, H, W, H], rtol=1e-6)

    assert len(masks.xy) == len(masks.xyn) == 2
    for mask, xy, xyn in zip(masks, masks.xy, masks.xyn):
        assert xy.dtype == xyn.dtype == np.float32 and xy.ndim == 2 and xy.shape[1] == 2
        np.testing.assert_allclose(xyn, xy / [W, H], rtol=1e-6)
        if mask.any():
            assert mask[xy[:, 1].astype(int), xy[:, 0].astype(int)].all()  # vertices are mask pixels

    # The usual ways out of Ultralytics' tensors.
    first = r.masks.data[0].cpu().numpy()
    assert first.shape == (H, W) and np.array_equal(first, np.asarray(r.masks)[0])
    assert r.boxes.xyxy.cpu().numpy().shape == (2, 4) and r.boxes.conf.cpu().numpy().shape == (2,)
    on_cpu, as_numpy = r.cpu(), r.numpy()
    assert isinstance(on_cpu.masks.data, torch.Tensor) and isinstance(on_cpu.boxes.xyxy, torch.Tensor)
    assert isinstance(as_numpy.masks.data, np.ndarray) and isinstance(as_numpy.boxes.xyxy, np.ndarray)
    assert isinstance(as_numpy.boxes.conf, np.ndarray) and as_numpy.boxes.data.shape == (2, 6)
    assert np.array_equal(as_numpy.masks.data, np.asarray(r.masks))


# docs/en/models/sam.md, "SAMPredictor example" (ultralytics/ultralytics at 0005af52), pasted; `import cv2`
# added, since the page's snippet uses it without importing it.
SAM_PREDICTOR_PROMPTS = """
import cv2
from ultralytics.models.sam import Predictor as SAMPredictor

# Create SAMPredictor
overrides = dict(conf=0.25, task='segment', mode='predict', imgsz=1024, model="mobile_sam.pt")
predictor = SAMPredictor(overrides=overrides)

# Set image
predictor.set_image("ultralytics/assets/zidane.jpg")  # set with image file
predictor.set_image(cv2.imread("ultralytics/assets/zidane.jpg"))  # set with np.ndarray
results = predictor(bboxes=[439, 437, 524, 709])
results = predictor(points=[900, 370], labels=[1])

# Reset image
predictor.reset_image()
"""


def run_predictor_docs_code(code: str) -> dict:
    """Execute a SAMPredictor example with only its import line changed; returns its variables."""
    theirs = "from ultralytics.models.sam import Predictor as SAMPredictor\n"
    assert code.count(theirs) == 1
    namespace: dict = {}
    exec(
        compile(code.replace(theirs, "from mobilesam.models.sam import Predictor as SAMPredictor\n"), "<docs>", "exec"), namespace
    )
    return namespace


def test_sam_predictor_example_runs_unchanged(docs_folder):
    from mobilesam import SAM

    namespace = run_predictor_docs_code(SAM_PREDICTOR_PROMPTS)
    predictor, results = namespace["predictor"], namespace["results"]
    # conf=0.25 keeps the masks scored above it, as Ultralytics does.
    want = SAM("mobile_sam.pt").predict("ultralytics/assets/zidane.jpg", points=[900, 370], labels=[1], conf=0.25)
    assert len(results) == 1 and len(results[0]) == len(want[0])
    np.testing.assert_array_equal(np.asarray(results[0].masks), np.asarray(want[0].masks))
    with pytest.raises(ValueError, match="no source given and no image read before"):
        predictor(points=[900, 370], labels=[1])


def test_sam_predictor_set_image_takes_bgr_arrays_as_ultralytics_does(docs_folder):
    from mobilesam.models.sam import Predictor

    rgb = np.asarray(Image.open("ultralytics/assets/zidane.jpg"))
    predictor = Predictor(overrides=dict(model="mobile_sam.pt"))
    predictor.set_image(rgb[:, :, ::-1].copy())
    from_array = predictor(points=[900, 370], labels=[1])[0]
    predictor.set_image("ultralytics/assets/zidane.jpg")
    from_file = predictor(points=[900, 370], labels=[1])[0]
    np.testing.assert_array_equal(from_array.orig_img, from_file.orig_img)
    np.testing.assert_array_equal(np.asarray(from_array.masks), np.asarray(from_file.masks))


def test_sam_predictor_maps_ultralytics_segment_everything_keywords(docs_folder):
    # The page's "Segment everything" example asks for points_stride=64 and crop_n_layers=1: over 8,000
    # prompts, minutes on two cores. The same call with a 4 x 4 grid checks how its keywords map.
    from mobilesam import SAM
    from mobilesam.models.sam import Predictor as SAMPredictor

    predictor = SAMPredictor(overrides=dict(task="segment", mode="predict", imgsz=1024, model="mobile_sam.pt"))
    got = predictor(source="ultralytics/assets/zidane.jpg", crop_n_layers=0, points_stride=4, conf_thres=0.0)[0]
    want = SAM("mobile_sam.pt").predict("ultralytics/assets/zidane.jpg", points_per_side=4, pred_iou_thresh=0.0)[0]
    assert len(got) == len(want)
    np.testing.assert_array_equal(np.asarray(got.masks), np.asarray(want.masks))
