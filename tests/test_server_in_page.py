"""In-page decoding's service side: an image's embedding and the decoder graph, as the page fetches and runs them.

On a seeded random vit_t at 256 input (the contract test's model, so a full run
finds its export cached). The page's part is replayed in Python: the embedding's
bytes read as the headers say, and the decoder graph run by onnxruntime on them
with prompts moved into the model's frame, must give `SamPredictor`'s masks.
"""

from __future__ import annotations

import dataclasses
import io
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
ort = pytest.importorskip("onnxruntime")
from fastapi.testclient import TestClient  # noqa: E402

from images import generated_image  # noqa: E402
from mobilesam import SamPredictor  # noqa: E402
from mobilesam.fidelity import compare_masks  # noqa: E402
from mobilesam.registry import build_from_config, get_config  # noqa: E402
from mobilesam.server import ServeSettings, create_app  # noqa: E402
from reference import randomize  # noqa: E402

IMAGE = generated_image()  # 123 x 457: not square, so the two sizes differ on each axis
CLICK = np.array([[300.0, 60.0]])
BOX = np.array([40.0, 20.0, 260.0, 110.0])


@pytest.fixture(scope="module")
def model():
    return randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed=21)


@pytest.fixture(scope="module")
def client(model):
    # Eager torch: the reference below embeds with the same engine.
    with TestClient(create_app(model, ServeSettings(), backend="torch")) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def image_id(client) -> str:
    buffer = io.BytesIO()
    Image.fromarray(IMAGE).save(buffer, format="PNG")
    response = client.post("/v1/images", files={"file": ("image.png", buffer.getvalue(), "image/png")})
    response.raise_for_status()
    return response.json()["image_id"]


@pytest.fixture(scope="module")
def predictor(model) -> SamPredictor:
    predictor = SamPredictor(model, backend="torch")
    predictor.set_image(IMAGE)
    return predictor


@pytest.fixture(scope="module")
def decoder(client) -> ort.InferenceSession:
    response = client.get("/v1/decoder.onnx")
    assert response.status_code == 200, response.text
    return ort.InferenceSession(response.content, providers=["CPUExecutionProvider"])


def fetch_embedding(client: TestClient, image_id: str, dtype: str) -> tuple[np.ndarray, dict[str, str]]:
    """The embedding as the page reads it: raw little-endian values shaped by the headers."""
    response = client.get(f"/v1/images/{image_id}/embedding", params={"dtype": dtype})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    shape = tuple(int(n) for n in response.headers["x-embedding-shape"].split(","))
    values = np.frombuffer(response.content, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
    return values, response.headers


def size_header(headers: dict[str, str], name: str) -> tuple[int, int]:
    h, w = (int(n) for n in headers[name].split(","))
    return h, w


def test_embedding_bytes_are_the_predictors_features(client, image_id, predictor):
    want = predictor.get_image_embedding().numpy()
    exact, headers = fetch_embedding(client, image_id, "float32")
    assert headers["x-embedding-shape"] == "1,256,16,16" and headers["x-embedding-dtype"] == "float32"
    assert size_header(headers, "x-original-size") == (123, 457)
    assert size_header(headers, "x-input-size") == (69, 256)
    assert headers["cache-control"] == "private, no-cache"
    np.testing.assert_array_equal(exact, want)
    half, headers = fetch_embedding(client, image_id, "float16")
    assert half.nbytes == want.size * 2 and headers["x-embedding-dtype"] == "float16"
    # fp16 keeps 11 significant bits: each value within half a unit in its last place (2**-11 relative).
    assert np.all(np.abs(half.astype(np.float32) - want) <= np.abs(want) * 2.0**-11 + 2.0**-25)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("prompt", ["click", "box"])
def test_decoder_graph_in_the_page_gives_the_predictors_masks(client, image_id, predictor, decoder, prompt, dtype):
    embedding, headers = fetch_embedding(client, image_id, dtype)
    (orig_h, orig_w), (input_h, input_w) = size_header(headers, "x-original-size"), size_header(headers, "x-input-size")
    scale = np.array([input_w / orig_w, input_h / orig_h])
    if prompt == "click":
        want, _, _ = predictor.predict(point_coords=CLICK, point_labels=np.array([1]), multimask_output=True)
        # Without a box the decoder expects the padding point SamPredictor adds: (0, 0), label -1.
        coords, labels = np.concatenate([CLICK * scale, [[0.0, 0.0]]]), np.array([1.0, -1.0])
    else:
        want, _, _ = predictor.predict(box=BOX, multimask_output=True)
        coords, labels = BOX.reshape(2, 2) * scale, np.array([2.0, 3.0])
    mask_side = 4 * embedding.shape[2]
    logits, _, _ = decoder.run(
        None,
        {
            "image_embeddings": embedding.astype(np.float32),
            "point_coords": coords[None].astype(np.float32),
            "point_labels": labels[None].astype(np.float32),
            "mask_input": np.zeros((1, 1, mask_side, mask_side), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array([orig_h, orig_w], np.float32),
        },
    )
    got = logits[0, 1:] > 0.0  # token 0 is the single-mask output; 1-3 are the multimask ones
    assert want.shape == got.shape == (3, 123, 457) and want.any()
    assert compare_masks(list(want), list(got)).min_iou >= 0.999


def test_both_routes_revalidate_with_their_etag(client, image_id):
    for path in (f"/v1/images/{image_id}/embedding", f"/v1/images/{image_id}/embedding?dtype=float32", "/v1/decoder.onnx"):
        first = client.get(path)
        etag = first.headers["etag"]
        assert first.status_code == 200 and etag.startswith('"') and first.headers["cache-control"] == "private, no-cache"
        again = client.get(path, headers={"If-None-Match": f'W/"other", {etag}'})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    float16, float32 = (client.get(f"/v1/images/{image_id}/embedding?dtype={d}").headers["etag"] for d in ("float16", "float32"))
    assert float16 != float32


def test_embedding_errors(client, image_id):
    missing = client.get("/v1/images/" + "0" * 32 + "/embedding")
    assert missing.status_code == 404 and "not in the cache" in missing.json()["detail"]
    wrong = client.get(f"/v1/images/{image_id}/embedding", params={"dtype": "int8"})
    assert wrong.status_code == 422 and "dtype" in wrong.json()["detail"]


def test_health_and_the_switch(client, model):
    assert client.get("/healthz").json()["in_page_decoding"] is True
    with TestClient(create_app(model, ServeSettings(in_page_decoding=False), backend="torch")) as off:
        assert off.get("/healthz").json()["in_page_decoding"] is False
        refused = off.get("/v1/decoder.onnx")
        assert refused.status_code == 404 and "--no-in-page-decoding" in refused.json()["detail"]


def test_the_page_starts_the_export_and_a_failure_is_a_503(model, tmp_path, monkeypatch):
    # Where the exports folder should be is a file: the export itself fails, as it would on a read-only home.
    (tmp_path / "home").write_text("not a folder")
    monkeypatch.setenv("MOBILESAM_HOME", str(tmp_path / "home"))
    with TestClient(create_app(model, ServeSettings(), backend="torch")) as broken:
        assert broken.get("/healthz").json()["in_page_decoding"] is True
        assert broken.get("/").status_code == 200  # loading the page starts the export, in the background
        deadline = time.monotonic() + 60
        while broken.get("/healthz").json()["in_page_decoding"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert broken.get("/healthz").json()["in_page_decoding"] is False
        failed = broken.get("/v1/decoder.onnx")
        assert failed.status_code == 503 and failed.json()["detail"].startswith("the decoder graph could not be exported")


def test_every_response_is_cross_origin_isolated_and_wasm_is_typed(client):
    for path in ("/", "/static/app.js", "/healthz", "/v1/images/unknown/embedding"):
        headers = client.get(path).headers
        assert headers["cross-origin-opener-policy"] == "same-origin", path
        assert headers["cross-origin-embedder-policy"] == "require-corp", path
    # The API docs load Swagger UI and ReDoc from a CDN, which COEP would block.
    for path in ("/docs", "/redoc"):
        assert "cross-origin-embedder-policy" not in client.get(path).headers, path
    vendor = "/static/vendor/onnxruntime-web/"
    assert client.head(vendor + "ort-wasm-simd-threaded.wasm").headers["content-type"] == "application/wasm"
    assert client.head(vendor + "ort-wasm-simd-threaded.mjs").headers["content-type"].startswith("text/javascript")


def test_cors_exposes_the_embedding_headers(model):
    settings = ServeSettings(cors_origins=("http://labeler.local",), in_page_decoding=False)
    with TestClient(create_app(model, settings, backend="torch")) as cors:
        exposed = cors.get("/healthz", headers={"Origin": "http://labeler.local"}).headers["access-control-expose-headers"]
        assert {"X-Embedding-Shape", "X-Embedding-Dtype", "X-Original-Size", "X-Input-Size", "ETag"} <= set(exposed.split(", "))
