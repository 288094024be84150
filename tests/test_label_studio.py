"""`mobilesam serve` as a Label Studio ML backend: /health, /setup, /predict, with brush RLE decoded by Label Studio's code.

Requests take the shapes Label Studio's `MLApi` sends (`label_studio/ml/api_connector.py`:
`health`, `setup`, `make_predictions`) and the interactive context its editor sends for
smart keypoints and rectangles. Returned masks are decoded with Label Studio's own
decoder (`label_studio_converter.brush.decode_rle`) and compared with `SamPredictor`'s.
Task images are served over HTTP on loopback by a small file server that, like Label
Studio's `/data/upload/`, wants `Authorization: Token <key>`.
"""

from __future__ import annotations

import base64
import functools
import http.server
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("label_studio_converter")
from fastapi.testclient import TestClient
from label_studio_converter import brush

from images import generated_image, sample_images
from mobilesam import SamPredictor, build_sam
from mobilesam.server import ServeSettings, create_app
from mobilesam.server.brush_rle import encode_brush_rle
from mobilesam.server.label_studio import LabelStudioOptions
from reference import randomize
from tolerance import assert_masks_agree, decoder_layers

TOKEN = "ls-token-123"
API_KEY = "secret-key"
CONFIG = """
<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image">
    <Label value="Banana" background="#FF0000"/>
    <Label value="Orange" background="#0d14d3"/>
  </BrushLabels>
  <KeyPointLabels name="tag2" toName="image" smart="true">
    <Label value="Banana" smart="true"/>
    <Label value="Orange" smart="true"/>
  </KeyPointLabels>
  <RectangleLabels name="tag3" toName="image" smart="true">
    <Label value="Banana"/>
    <Label value="Orange"/>
  </RectangleLabels>
</View>
"""
IMAGE = sample_images()["chelsea"]  # 300 x 451
H, W = IMAGE.shape[:2]


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class FileHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; under /data/upload/ only with Label Studio's token, as Label Studio does."""

    def do_GET(self) -> None:
        if self.path.startswith("/data/upload/") and self.headers.get("Authorization") != f"Token {TOKEN}":
            self.send_error(401, "token required")
            return
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ls_files")
    (root / "data" / "upload" / "1").mkdir(parents=True)
    (root / "cat.png").write_bytes(png_bytes(IMAGE))
    (root / "data" / "upload" / "1" / "gen.png").write_bytes(png_bytes(generated_image()))
    return root


@pytest.fixture(scope="module")
def file_server(files):
    handler = functools.partial(FileHandler, directory=str(files))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def model():
    return randomize(build_sam("vit_t"), seed=5)


@pytest.fixture(scope="module")
def client(model, file_server, files):
    options = LabelStudioOptions(url=file_server, api_key=TOKEN, files_root=files)
    app = create_app(model, ServeSettings(queue_size=4), backend="torch", label_studio=options)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def predictor(model) -> SamPredictor:
    predictor = SamPredictor(model, "torch")
    predictor.set_image(IMAGE)
    return predictor


def keypoint(x: float, y: float, positive: bool = True, label: str = "Banana") -> dict:
    """A smart keypoint as Label Studio's editor puts it in the context (percent of the image)."""
    return {
        "original_width": W,
        "original_height": H,
        "image_rotation": 0,
        "value": {"x": x / W * 100, "y": y / H * 100, "width": 0.3, "keypointlabels": [label]},
        "is_positive": positive,
        "id": "kp",
        "from_name": "tag2",
        "to_name": "image",
        "type": "keypointlabels",
        "origin": "manual",
    }


def rectangle(x1: float, y1: float, x2: float, y2: float, label: str = "Orange") -> dict:
    return {
        "original_width": W,
        "original_height": H,
        "image_rotation": 0,
        "value": {
            "x": x1 / W * 100,
            "y": y1 / H * 100,
            "width": (x2 - x1) / W * 100,
            "height": (y2 - y1) / H * 100,
            "rotation": 0,
            "rectanglelabels": [label],
        },
        "id": "rect",
        "from_name": "tag3",
        "to_name": "image",
        "type": "rectanglelabels",
        "origin": "manual",
    }


def predict_request(regions: list[dict] | None, image: str, label_config: str = CONFIG) -> dict:
    """The body of Label Studio's `MLApi.make_predictions`."""
    return {
        "tasks": [{"id": 7, "data": {"image": image}, "annotations": [], "predictions": []}],
        "model_version": None,
        "project": "3.1700000000",
        "label_config": label_config,
        "params": {"login": None, "password": None, "context": None if regions is None else {"result": regions}},
    }


def decoded_regions(body: dict) -> list[tuple[np.ndarray, dict]]:
    """Each returned brush region's mask, decoded by Label Studio's converter, with the region."""
    [prediction] = body["results"]
    out = []
    for region in prediction["result"]:
        assert region["type"] == "brushlabels" and region["value"]["format"] == "rle"
        values = brush.decode_rle(region["value"]["rle"])
        rgba = values.reshape(region["original_height"], region["original_width"], 4)
        assert set(np.unique(rgba)) <= {0, 255}
        assert (rgba == rgba[:, :, 3:]).all()  # all four channels alike
        out.append((rgba[:, :, 3] == 255, region))
    return out


def test_brush_rle_decodes_with_label_studios_decoder():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:300, :300]
    masks = [
        rng.random((37, 53)) < 0.5,  # many short runs
        np.ones((300, 300), bool),  # one run of 360,000 values: cut at 2**16
        np.zeros((1, 1), bool),
        (yy - 150) ** 2 + (xx - 100) ** 2 < 90**2,  # a disc: runs of every field width
        np.pad(np.ones((5, 5), bool), 2),
    ]
    for mask in masks:
        decoded = brush.decode_rle(encode_brush_rle(mask)).reshape(*mask.shape, 4)
        np.testing.assert_array_equal(decoded, np.repeat(mask[:, :, None] * 255, 4, axis=2).astype(np.uint8))
    # The same bytes as Label Studio's own encoder, but for its needless zero byte at a whole-byte end.
    disc = masks[3]
    assert encode_brush_rle(disc) == brush.mask2rle(disc.astype(np.uint8) * 255)[: len(encode_brush_rle(disc))]
    with pytest.raises(ValueError, match="mask"):
        encode_brush_rle(np.zeros((2, 2, 2), bool))


def test_health_and_setup(client):
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "UP"
    setup = {
        "project": "3.1700000000",
        "schema": CONFIG,
        "hostname": "http://localhost:8080",
        "access_token": TOKEN,
        "model_version": None,
        "extra_params": None,
    }
    response = client.post("/setup", json=setup)
    assert response.status_code == 200
    assert response.json()["model_version"] == health.json()["model_version"]
    assert "vit_t" in response.json()["model_version"]
    no_brush = client.post("/setup", json={**setup, "schema": '<View><Image name="image" value="$image"/></View>'})
    assert no_brush.status_code == 422 and "BrushLabels" in no_brush.json()["detail"]


def test_no_context_predicts_nothing(client, file_server):
    response = client.post("/predict", json=predict_request(None, f"{file_server}/cat.png"))
    assert response.status_code == 200
    assert response.json() == {"results": []}


def test_keypoints_positive_and_negative(client, predictor, file_server):
    points = [(200.0, 150.0, True), (320.0, 90.0, False)]
    regions = [keypoint(x, y, positive) for x, y, positive in points]
    response = client.post("/predict", json=predict_request(regions, f"{file_server}/cat.png"))
    assert response.status_code == 200, response.text
    [(mask, region)] = decoded_regions(response.json())
    assert region["value"]["brushlabels"] == ["Banana"]
    assert (region["from_name"], region["to_name"]) == ("tag", "image")
    assert (region["original_width"], region["original_height"]) == (W, H)
    masks, scores, _ = predictor.predict(
        np.array([p[:2] for p in points]), np.array([int(p[2]) for p in points]), multimask_output=False
    )
    np.testing.assert_array_equal(mask, masks[0])
    assert region["score"] == pytest.approx(float(scores[0]), rel=1e-6)
    assert 0 < mask.sum() < mask.size  # a real mask, not an empty or full one


def test_single_click_keeps_the_best_of_three(client, predictor, file_server):
    response = client.post("/predict", json=predict_request([keypoint(100.0, 200.0)], f"{file_server}/cat.png"))
    assert response.status_code == 200, response.text
    [(mask, region)] = decoded_regions(response.json())
    masks, scores, _ = predictor.predict(np.array([[100.0, 200.0]]), np.array([1]), multimask_output=True)
    np.testing.assert_array_equal(mask, masks[int(np.argmax(scores))])
    assert region["score"] == pytest.approx(float(scores.max()), rel=1e-6)


def test_one_rectangle_with_a_keypoint(client, predictor, file_server):
    box = (120.0, 60.0, 380.0, 260.0)
    regions = [rectangle(*box), keypoint(250.0, 150.0, label="Orange")]
    response = client.post("/predict", json=predict_request(regions, f"{file_server}/cat.png"))
    assert response.status_code == 200, response.text
    [(mask, region)] = decoded_regions(response.json())
    assert region["value"]["brushlabels"] == ["Orange"]
    masks, _, _ = predictor.predict(np.array([[250.0, 150.0]]), np.array([1]), box=np.array(box), multimask_output=False)
    np.testing.assert_array_equal(mask, masks[0])


def test_several_rectangles_are_several_objects(client, predictor, model, file_server):
    boxes = [(10.0, 10.0, 200.0, 150.0), (220.0, 100.0, 440.0, 290.0), (50.0, 160.0, 150.0, 280.0)]
    regions = [rectangle(*box, label=label) for box, label in zip(boxes, ["Orange", "Banana", "Orange"])]
    response = client.post("/predict", json=predict_request(regions, f"{file_server}/cat.png"))
    assert response.status_code == 200, response.text
    decoded = decoded_regions(response.json())
    assert [region["value"]["brushlabels"] for _, region in decoded] == [["Orange"], ["Banana"], ["Orange"]]
    for (mask, _), box in zip(decoded, boxes):
        # Decoded together in one batch: equal but for pixels within rounding of the threshold.
        logits, _, _ = predictor.predict(box=np.array(box), multimask_output=False, return_logits=True)
        assert_masks_agree(mask, logits[0] > 0, logits[0], f"box {box}", decoder_layers(model))


def test_the_image_is_embedded_once_and_label_studio_paths_are_read_with_the_token(client, file_server):
    before = client.get("/healthz").json()["embeddings_computed"]
    for x in (60.0, 90.0):
        response = client.post("/predict", json=predict_request([keypoint(x, 60.0)], "/data/upload/1/gen.png"))
        assert response.status_code == 422  # the keypoints are for the cat's size, not this image's
        assert "123" in response.json()["detail"]
    gen = generated_image()
    region = keypoint(100.0, 50.0)
    region.update(original_width=gen.shape[1], original_height=gen.shape[0])
    region["value"].update(x=100.0 / gen.shape[1] * 100, y=50.0 / gen.shape[0] * 100)
    for image in ("/data/upload/1/gen.png", f"{file_server}/data/upload/1/gen.png"):
        response = client.post("/predict", json=predict_request([region], image))
        assert response.status_code == 200, response.text
    assert client.get("/healthz").json()["embeddings_computed"] == before + 1


def test_local_paths_and_data_urls(client, files):
    for image in (
        "cat.png",
        "/data/local-files/?d=cat.png",
        "data:image/png;base64," + base64.b64encode(png_bytes(IMAGE)).decode(),
    ):
        response = client.post("/predict", json=predict_request([keypoint(200.0, 150.0)], image))
        assert response.status_code == 200, (image, response.text)
    outside = client.post("/predict", json=predict_request([keypoint(200.0, 150.0)], "../" + files.name + "/cat.png"))
    assert outside.status_code == 200  # ../<root>/cat.png resolves inside the root again
    escape = client.post("/predict", json=predict_request([keypoint(200.0, 150.0)], "/data/local-files/?d=../../etc/passwd"))
    assert escape.status_code == 422 and "outside" in escape.json()["detail"]


@pytest.mark.parametrize(
    ("regions", "image", "label_config", "message"),
    [
        ([keypoint(10.0, 10.0)], None, CONFIG, "has no image in data['image']"),
        ([keypoint(10.0, 10.0)], "{server}/missing.png", CONFIG, "HTTP 404"),
        ([keypoint(10.0, 10.0)], "s3://bucket/cat.png", CONFIG, "scheme"),
        ([{**keypoint(10.0, 10.0), "type": "polygonlabels"}], "{server}/cat.png", CONFIG, "no prompt"),
        ([{**keypoint(10.0, 10.0), "value": {"y": 5}}], "{server}/cat.png", CONFIG, "value.x must be a number"),
        ([{**keypoint(10.0, 10.0), "image_rotation": 90}], "{server}/cat.png", CONFIG, "rotated"),
        ([keypoint(5 * W, 10.0)], "{server}/cat.png", CONFIG, "point"),
        (
            [rectangle(0, 0, 50, 50), rectangle(100, 100, 150, 150), keypoint(300.0, 20.0)],
            "{server}/cat.png",
            CONFIG,
            "lies in none of the 2 rectangles",
        ),
        ([keypoint(10.0, 10.0)], "{server}/cat.png", None, "no labeling config"),
        ([keypoint(10.0, 10.0)], "{server}/cat.png", "<View><Image", "not valid XML"),
    ],
)
def test_bad_requests_say_what_is_wrong(client, file_server, regions, image, label_config, message):
    body = predict_request(regions, image.format(server=file_server) if image else "", label_config)
    if image is None:
        body["tasks"][0]["data"] = {"picture": "x.png"}
    response = client.post("/predict", json=body)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_label_studio_paths_need_its_url(model):
    app = create_app(model, ServeSettings(api_key=API_KEY), backend="torch")
    with TestClient(app) as bare:
        body = predict_request([keypoint(10.0, 10.0)], "/data/upload/1/gen.png")
        assert bare.post("/predict", json=body).status_code == 401
        assert bare.get("/health").status_code == 200  # the health check needs no key
        auth = ("label-studio", API_KEY)  # Label Studio's Basic auth: the password is the key
        response = bare.post("/predict", json=body, auth=auth)
        assert response.status_code == 422 and "--label-studio-url" in response.json()["detail"]
        local = bare.post("/predict", json=predict_request([keypoint(10.0, 10.0)], "cat.png"), auth=auth)
        assert local.status_code == 422 and "--label-studio-files" in local.json()["detail"]
        assert bare.post("/setup", json={"schema": CONFIG}, auth=("u", "wrong")).status_code == 401
