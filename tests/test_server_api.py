"""The HTTP service (`mobilesam.server`) through FastAPI's TestClient, on a seeded random vit_t."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient

from images import generated_image, sample_images
from mobilesam import SamPredictor, build_sam
from mobilesam.backends import make_backend
from mobilesam.server import (
    ImageNotFound,
    InvalidRequest,
    PayloadTooLarge,
    SegmentationService,
    ServeSettings,
    SingleFlightLRU,
    UnsupportedMedia,
    create_app,
)
from mobilesam.server.schemas import EverythingRequest, SegmentRequest
from reference import randomize

MAX_UPLOAD = 300_000
MAX_PIXELS = 400_000


@pytest.fixture(scope="module")
def model():
    """Seeded random vit_t whose encoder counts its calls (the real forward runs)."""
    sam = randomize(build_sam("vit_t"), seed=3)
    encoder = sam.image_encoder
    forward = encoder.forward
    encoder.calls = 0

    def counting_forward(*args, **kwargs):
        encoder.calls += 1
        return forward(*args, **kwargs)

    encoder.forward = counting_forward
    return sam


@pytest.fixture(scope="module")
def client(model):
    settings = ServeSettings(max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS, queue_size=2)
    # Eager torch: the counting encoder above is what embeds.
    with TestClient(create_app(model, settings, backend="torch")) as test_client:
        yield test_client


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(client: TestClient, data: bytes, content_type: str = "image/png", name: str = "image.png"):
    return client.post("/v1/images", files={"file": (name, data, content_type)})


GENERATED = generated_image()  # 123 x 457


@pytest.fixture(scope="module")
def generated_id(client) -> str:
    response = upload(client, png_bytes(GENERATED))
    assert response.status_code == 200, response.text
    return response.json()["image_id"]


def decode(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def test_upload_computes_once_then_hits_the_cache(client, model, generated_id):
    calls = model.image_encoder.calls
    again = upload(client, png_bytes(GENERATED)).json()
    as_json = client.post("/v1/images", json={"image": base64.b64encode(png_bytes(GENERATED)).decode()}).json()
    as_jpeg_name = upload(client, png_bytes(GENERATED), name="same-pixels.jpg").json()
    assert again["image_id"] == as_json["image_id"] == as_jpeg_name["image_id"] == generated_id
    assert again["cached"] and as_json["cached"]
    assert (again["width"], again["height"]) == (457, 123)
    assert model.image_encoder.calls == calls
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == "vit_t" and health["backend"] == "torch"
    assert health["cache_entries"] >= 1 and health["cache_bytes"] >= 256 * 64 * 64 * 4
    assert health["cache_hits"] >= 3


def test_concurrent_identical_uploads_compute_once(client, model):
    data = png_bytes(sample_images()["astronaut"][::4, ::4])  # 128 x 128
    calls = model.image_encoder.calls
    barrier = threading.Barrier(2)
    answers = []

    def send() -> None:
        barrier.wait()
        answers.append(upload(client, data))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    assert model.image_encoder.calls == calls + 1
    assert answers[0].json()["image_id"] == answers[1].json()["image_id"]
    assert sorted(r.json()["cached"] for r in answers) == [False, True]


def test_segment_matches_the_predictor(client, model, generated_id):
    predictor = SamPredictor(model, backend="torch")
    predictor.set_image(GENERATED)
    points, labels, box = [[200.0, 60.0], [40.0, 20.0]], [1, 0], [150.0, 20.0, 300.0, 110.0]
    expected, scores, _ = predictor.predict(np.array(points), np.array(labels), np.array(box), multimask_output=True)
    order = np.argsort(-scores, kind="stable")

    calls = model.image_encoder.calls
    response = client.post(
        f"/v1/images/{generated_id}/segment", json={"points": points, "labels": labels, "box": box, "multimask": True}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert model.image_encoder.calls == calls  # decoder only, on the cached embedding
    assert (body["width"], body["height"]) == (457, 123) and len(body["masks"]) == 3
    for mask, index in zip(body["masks"], order):
        assert mask["score"] == pytest.approx(float(scores[index]), abs=1e-6)
        decoded = decode(mask["segmentation"])
        np.testing.assert_array_equal(decoded, expected[index])
        assert mask["area"] == int(decoded.sum())
        if decoded.any():
            ys, xs = np.nonzero(decoded)
            assert mask["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        assert "png" not in mask


def untimed(body: dict) -> dict:
    return {key: value for key, value in body.items() if key != "milliseconds"}


def test_the_service_answers_what_its_routes_answer(client, generated_id):
    # The routes only parse and forward: the service called directly gives the same masks.
    service = client.app.state.service
    prompt = {"points": [[200.0, 60.0], [40.0, 20.0]], "labels": [1, 0], "multimask": True, "return_logits": True}
    served = client.post(f"/v1/images/{generated_id}/segment", json=prompt).json()
    direct = asyncio.run(service.segment(generated_id, SegmentRequest(**prompt))).model_dump(exclude_none=True)
    assert untimed(served) == untimed(direct) and len(served["masks"]) == 3
    options = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    served = client.post(f"/v1/images/{generated_id}/everything", json=options).json()
    direct = asyncio.run(service.everything(generated_id, EverythingRequest(**options))).model_dump()
    assert untimed(served) == untimed(direct) and served["masks"]


def test_the_service_without_http(model):
    service = SegmentationService(model, ServeSettings(max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS))
    try:
        info = asyncio.run(service.upload(png_bytes(GENERATED), "image/png"))
        assert (info.width, info.height) == (457, 123)
        image = service.image(info.image_id)
        assert image.original_size == (123, 457) and image.pixels.shape == (123, 457, 3)
        response = asyncio.run(service.segment(info.image_id, SegmentRequest(box=[150, 20, 300, 110])))
        assert len(response.masks) == 1 and response.masks[0].segmentation is not None
        assert service.health().cache_entries == 1 and service.models().models[0].name == "vit_t"
        refusals = [
            (lambda: service.image("0" * 32), ImageNotFound, 404),
            (lambda: asyncio.run(service.upload(b"hello", "text/plain")), UnsupportedMedia, 415),
            (lambda: asyncio.run(service.upload(b"\x89PNG not really", "image/png")), UnsupportedMedia, 415),
            (lambda: asyncio.run(service.upload(png_bytes(np.zeros((1000, 1000), np.uint8)), "image/png")), PayloadTooLarge, 413),
            (lambda: asyncio.run(service.segment(info.image_id, SegmentRequest())), InvalidRequest, 422),
        ]
        for call, error, status in refusals:
            with pytest.raises(error) as raised:
                call()
            assert raised.value.status_code == status and raised.value.headers == {}
    finally:
        service.close()


def test_the_service_embeds_with_the_backend_it_is_given():
    model = randomize(build_sam("vit_t"), seed=3)  # the module's model counts calls through a patched forward
    backend = make_backend("torch-fast", model)
    prompt = {"points": [[200.0, 60.0]], "multimask": False}
    with TestClient(create_app(model, ServeSettings(), backend)) as fast_client:
        image_id = upload(fast_client, png_bytes(GENERATED)).json()["image_id"]
        served = fast_client.app.state.cache.get(image_id).embedding.features
        body = fast_client.post(f"/v1/images/{image_id}/segment", json=prompt).json()
    predictor, eager = SamPredictor(model, backend), SamPredictor(model, backend="torch")
    predictor.set_image(GENERATED)
    eager.set_image(GENERATED)
    assert torch.equal(served, predictor.features) and not torch.equal(served, eager.features)
    expected, scores, _ = predictor.predict(np.array(prompt["points"]), np.array([1]), multimask_output=False)
    np.testing.assert_array_equal(decode(body["masks"][0]["segmentation"]), expected[0])
    assert body["masks"][0]["score"] == pytest.approx(float(scores[0]), abs=1e-6)


def test_segment_png_and_mask_input_round_trip(client, generated_id):
    first = client.post(
        f"/v1/images/{generated_id}/segment", json={"points": [[100, 50]], "format": "png", "return_logits": True}
    ).json()
    (mask,) = first["masks"]
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(mask["png"]))))
    assert png.shape == (123, 457) and set(np.unique(png)) <= {0, 255}
    assert int((png == 255).sum()) == mask["area"]
    logits = np.frombuffer(base64.b64decode(mask["low_res_logits"]), dtype="<f4")
    assert logits.shape == (256 * 256,) and np.isfinite(logits).all()
    again = client.post(f"/v1/images/{generated_id}/segment", json={"points": [[100, 50]], "mask_input": mask["low_res_logits"]})
    assert again.status_code == 200, again.text
    nested = client.post(f"/v1/images/{generated_id}/segment", json={"mask_input": logits.reshape(256, 256).tolist()})
    assert nested.status_code == 200, nested.text


def test_everything_reuses_the_embedding(client, model, generated_id):
    calls = model.image_encoder.calls
    options = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    response = client.post(f"/v1/images/{generated_id}/everything", json=options)
    assert response.status_code == 200, response.text
    body = response.json()
    assert model.image_encoder.calls == calls
    assert body["masks"], "thresholds at 0 keep candidates"
    for record in body["masks"]:
        assert decode(record["segmentation"]).sum() == record["area"]
        assert set(record) >= {"bbox", "predicted_iou", "stability_score", "point_coords", "crop_box"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"points": [[10, 10]], "labels": [1, 0]}, "expected 1 point labels"),
        ({"points": [[10, 10]], "labels": [2]}, "must be 1 (foreground) or 0 (background)"),
        ({"points": [[10, 10, 3]]}, "point_coords must have shape (N, 2)"),
        ({"points": [[5000, 10]]}, "lies far outside the 457x123 image"),
        ({"box": [100, 100, 10, 10]}, "x1 <= x2 and y1 <= y2"),
        ({"box": [1, 2, 3]}, "a box must be [x1, y1, x2, y2]"),
        ({"labels": [1]}, "labels were given without points"),
        ({}, "give at least one prompt"),
        ({"mask_input": [[0.0] * 4] * 4}, "mask_input must have shape (1, 256, 256)"),
        ({"mask_input": "AAAA"}, "mask_input must be 256x256 float32 values"),
    ],
)
def test_bad_prompts_are_422_with_the_library_message(client, generated_id, body, message):
    response = client.post(f"/v1/images/{generated_id}/segment", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_nan_point_is_422(client, generated_id):
    response = client.post(
        f"/v1/images/{generated_id}/segment", content='{"points": [[NaN, 1]]}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and "NaN" in response.json()["detail"]


def test_bad_everything_options_are_422(client, generated_id):
    response = client.post(f"/v1/images/{generated_id}/everything", json={"box_nms_thresh": 2})
    assert response.status_code == 422 and "box_nms_thresh is a box IoU" in response.json()["detail"]
    response = client.post(f"/v1/images/{generated_id}/everything", json={"points_per_side": 0})
    assert response.status_code == 422  # pydantic's range check, before the generator


def test_unknown_image_is_404(client):
    for path in ("segment", "everything"):
        response = client.post(f"/v1/images/{'0' * 32}/{path}", json={"points": [[1, 1]]} if path == "segment" else {})
        assert response.status_code == 404
        assert "not in the cache" in response.json()["detail"]


def test_bad_uploads(client):
    not_image = upload(client, b"hello", content_type="text/plain", name="notes.txt")
    assert not_image.status_code == 415 and "only images" in not_image.json()["detail"]
    garbage = upload(client, b"\x89PNG not really", content_type="image/png")
    assert garbage.status_code == 415 and "not a readable image" in garbage.json()["detail"]
    big_file = upload(client, np.random.default_rng(0).bytes(MAX_UPLOAD + 1))
    assert big_file.status_code == 413 and "limit" in big_file.json()["detail"]
    bomb = upload(client, png_bytes(np.zeros((1000, 1000), dtype=np.uint8)))  # a few kB, a million pixels
    assert bomb.status_code == 413 and "pixels" in bomb.json()["detail"]
    no_file = client.post("/v1/images", files={"picture": ("a.png", b"x", "image/png")})
    assert no_file.status_code == 422 and "'file'" in no_file.json()["detail"]
    bad_base64 = client.post("/v1/images", json={"image": "not base64!"})
    assert bad_base64.status_code == 422 and "base64" in bad_base64.json()["detail"]
    wrong_type = client.post("/v1/images", content=b"abc", headers={"Content-Type": "application/octet-stream"})
    assert wrong_type.status_code == 415 and "multipart/form-data" in wrong_type.json()["detail"]
    path_like = client.post("/v1/images", json={"image": "/etc/passwd"})
    assert path_like.status_code in (415, 422)


def test_full_queue_is_503_with_retry_after(client, generated_id):
    worker = client.app.state.worker
    release = threading.Event()
    blockers = [worker.submit(release.wait, 30)]
    deadline = time.monotonic() + 10
    while not blockers[0].running() and time.monotonic() < deadline:
        time.sleep(0.01)
    blockers += [worker.submit(release.wait, 30) for _ in range(worker.queue_size)]
    try:
        busy = client.post(f"/v1/images/{generated_id}/segment", json={"points": [[10, 10]]})
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
        assert "busy" in busy.json()["detail"]
        computed = client.app.state.cache.stats().computations
        fresh = upload(client, png_bytes(generated_image(40, 50, seed=7)))
        assert fresh.status_code == 503 and "Retry-After" in fresh.headers
        assert client.app.state.cache.stats().computations == computed
    finally:
        release.set()
    for blocker in blockers:
        blocker.result(timeout=10)
    assert client.post(f"/v1/images/{generated_id}/segment", json={"points": [[10, 10]]}).status_code == 200


def test_clicks_do_not_wait_for_a_running_everything(client, generated_id):
    # The everything lane is held busy, as by a long segment-everything: one more waits there,
    # and clicks and uploads still go through at once on their own lane.
    lane = client.app.state.service.everything_worker
    release = threading.Event()
    blocker = lane.submit(release.wait, 60)
    answers = {}
    everything = threading.Thread(
        target=lambda: answers.update(
            everything=client.post(f"/v1/images/{generated_id}/everything", json={"points_per_side": 4})
        )
    )
    try:
        everything.start()
        deadline = time.monotonic() + 10
        while client.get("/healthz").json()["everything_waiting"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.get("/healthz").json()["everything_waiting"] == 1
        click = client.post(f"/v1/images/{generated_id}/segment", json={"points": [[10, 10]]})
        assert click.status_code == 200 and everything.is_alive() and "everything" not in answers
    finally:
        release.set()
    blocker.result(timeout=10)
    everything.join(timeout=60)
    assert answers["everything"].status_code == 200 and isinstance(answers["everything"].json()["masks"], list)


def test_models_openapi_and_page(client):
    (info,) = client.get("/v1/models").json()["models"]
    assert info["name"] == "vit_t" and info["image_size"] == 1024 and info["parameters"] > 9_000_000
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/images", "/v1/images/{image_id}/segment", "/v1/images/{image_id}/everything", "/v1/models", "/healthz"} <= set(
        paths
    )
    assert "multipart/form-data" in paths["/v1/images"]["post"]["requestBody"]["content"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="prompt-canvas"' in page.text
    assert client.get("/static/app.js").status_code == 200
    assert "access-control-allow-origin" not in client.get("/healthz", headers={"Origin": "http://elsewhere"}).headers


def test_api_key_and_cors(model):
    settings = ServeSettings(api_key="s3cret", cors_origins=("http://labeler.local",))
    with TestClient(create_app(model, settings, backend="torch")) as keyed:
        assert keyed.get("/v1/models").status_code == 401
        assert keyed.get("/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
        assert keyed.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert keyed.post("/v1/images", json={"image": ""}).status_code == 401
        assert keyed.get("/healthz").status_code == 200
        response = keyed.get("/healthz", headers={"Origin": "http://labeler.local"})
        assert response.headers["access-control-allow-origin"] == "http://labeler.local"


def test_settings_are_checked():
    with pytest.raises(ValueError, match="queue_size"):
        ServeSettings(queue_size=0)
    with pytest.raises(ValueError, match="api_key"):
        ServeSettings(api_key="")


def test_lru_is_bounded_in_bytes_and_single_flight():
    from concurrent.futures import Future

    cache: SingleFlightLRU[bytes] = SingleFlightLRU(10, len)
    submitted = []

    def submit(value: bytes):
        def start() -> Future:
            future: Future = Future()
            submitted.append((future, value))
            return future

        return start

    first, lookup = cache.get_or_submit("a", submit(b"aaaa"))
    joined, second_lookup = cache.get_or_submit("a", submit(b"other"))
    assert (lookup, second_lookup) == ("computed", "joined") and joined is first and len(submitted) == 1
    submitted[0][0].set_result(b"aaaa")
    assert cache.get("a") == b"aaaa"
    for key in "bc":
        future, _ = cache.get_or_submit(key, submit(b"xxxx"))
        future.set_result(b"xxxx")
    assert cache.get("a") is None  # least recently used, evicted once 12 > 10 bytes
    assert cache.stats().bytes == 8 and cache.stats().entries == 2
    failed, _ = cache.get_or_submit("d", submit(b""))
    failed.set_exception(RuntimeError("boom"))
    assert cache.get("d") is None and cache.get_or_submit("d", submit(b"dd"))[1] == "computed"
    too_big, _ = cache.get_or_submit("e", submit(b"e" * 11))
    too_big.set_result(b"e" * 11)
    assert cache.get("e") is None and cache.stats().entries == 2
