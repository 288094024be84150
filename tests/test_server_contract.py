"""The service's OpenAPI document is its contract: schemathesis sends what the document allows (and what it does not).

Checked on every operation, in process (ASGI, no socket): no 5xx; every
status code, content type and body is the documented one; requests the
schema forbids are refused. Not checked: that every schema-valid request
succeeds, because JSON Schema cannot say "these bytes are a PNG" or "this
point lies inside the uploaded image"; those answers are documented 4xx
with the one error body, which the checks above do hold to.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from PIL import Image

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from images import generated_image  # noqa: E402
from mobilesam.registry import build_from_config, get_config  # noqa: E402
from mobilesam.server import ServeSettings, create_app  # noqa: E402
from reference import randomize  # noqa: E402

MODEL = randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed=21)
APP = create_app(MODEL, ServeSettings(model_name="vit_t", max_upload_bytes=200_000, max_pixels=400_000))


async def _app_kept_running(scope, receive, send):
    """APP, with its lifespan answered here: schemathesis's client starts and stops an app per call,
    and stopping this one would stop its model workers for every later call."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": f"{message['type']}.complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await APP(scope, receive, send)


schema = schemathesis.openapi.from_asgi("/openapi.json", _app_kept_running)


def _uploaded_image_id() -> str:
    buffer = io.BytesIO()
    Image.fromarray(generated_image(48, 64, seed=2)).save(buffer, format="PNG")
    # No `with`: leaving the client would run the app's shutdown and stop its workers.
    response = TestClient(APP).post("/v1/images", files={"file": ("photo.png", buffer.getvalue(), "image/png")})
    response.raise_for_status()
    return response.json()["image_id"]


IMAGE_ID = _uploaded_image_id()


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
def test_the_service_keeps_its_documented_contract(case):
    if case.path_parameters and "image_id" in case.path_parameters and np.random.default_rng(len(str(case.body))).random() < 0.8:
        # Mostly the uploaded image, so prompts reach the model; sometimes the generated id (a 404).
        case.path_parameters["image_id"] = IMAGE_ID
    positive = case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE
    if positive and case.operation.path.endswith("/everything") and isinstance(case.body, dict):
        # The schema allows grids up to 128 points a side with 3 crop layers (minutes of work each):
        # bounded here so the run stays in CI time; the limits themselves are what the schema says.
        defaults = {"points_per_side": 32, "crop_n_layers": 0}
        for name, cap in (("points_per_side", 4), ("crop_n_layers", 1)):
            case.body[name] = min(case.body.get(name, defaults[name]), cap)
    case.call_and_validate(excluded_checks=[positive_data_acceptance], timeout=120)
