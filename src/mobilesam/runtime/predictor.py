"""`OnnxPredictor`: `SamPredictor`'s interface over an export folder, on onnxruntime or OpenVINO and numpy.

For deployments that should not load torch: importing torch alone costs
about 530 MiB of memory here, more than the whole onnxruntime prediction.
The pre-processing (`transforms`), prompt checks (`prompts`) and image
conversion (`io.images`) are the ones `SamPredictor` uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..embedding import ImageEmbedding
from ..image_state import CurrentImage
from ..io.images import to_rgb_uint8
from ..prompts import check_prompt, to_model_frame
from ..transforms import ResizeLongestSide, normalize_and_pad
from .engines import open_sessions
from .layout import METADATA_FILE
from .sessions import onnx_points


class OnnxPredictor(CurrentImage[np.ndarray]):
    """Embed an image once with the exported encoder, then predict masks from prompts with the exported decoder.

    The methods and return values are `SamPredictor`'s, on numpy arrays
    (`set_image`, `embed`, `predict`, `features`, `set_embedding`, `reset_image`);
    masks come out of the decoder graph already at the image's size.

    Args:
        onnx_dir: A folder written by `mobilesam export`.
        backend: Which runtime and precision run the graphs: "onnx" (onnxruntime, fp32),
            "onnx-int8", "openvino", "openvino-bf16", "openvino-int8" (`runtime.GRAPH_BACKENDS`).
        threads: Intra-op threads; None lets the runtime choose (one per core).

    Raises:
        FileNotFoundError: Not an export folder, or a graph is missing.
        ValueError: Not a graph backend, or a sidecar without the pre-processing constants.
        ImportError: The backend's runtime is not installed.
    """

    def __init__(self, onnx_dir: str | Path, *, backend: str = "onnx", threads: int | None = None) -> None:
        self.sessions = open_sessions(onnx_dir, backend, threads=threads)
        metadata = self.sessions.metadata
        try:
            preprocessing = metadata["preprocessing"]
            self.img_size = int(metadata["image_size"])
            self.pixel_mean = [float(v) for v in preprocessing["pixel_mean"]]
            self.pixel_std = [float(v) for v in preprocessing["pixel_std"]]
            self.image_format = str(preprocessing["image_format"])
            self.mask_threshold = float(preprocessing["mask_threshold"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{onnx_dir}: {METADATA_FILE} lacks the pre-processing constants ({err}); "
                "export again with this version of `mobilesam export`"
            ) from None
        self.transform = ResizeLongestSide(self.img_size)
        super().__init__()

    def embed(self, image: np.ndarray, image_format: str = "RGB") -> ImageEmbedding[np.ndarray]:
        """The embedding of an (H, W, 3) image ("RGB" or "BGR"; other layouts are converted)."""
        rgb = to_rgb_uint8(image, image_format)
        if self.image_format == "BGR":
            rgb = rgb[..., ::-1]
        resized = self.transform.apply_image(np.ascontiguousarray(rgb))
        features = self.sessions.embed(normalize_and_pad(resized, self.pixel_mean, self.pixel_std, self.img_size))
        return ImageEmbedding(features, rgb.shape[:2], resized.shape[:2])

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for one object, as `SamPredictor.predict` does; needs a point or a box.

        Returns:
            masks: (C, H, W) bool (or float32 logits) at the original size, C = 3 or 1.
            iou_predictions: (C,) predicted mask quality.
            low_res_logits: (C, 256, 256), to feed back as `mask_input`.
        """
        embedding = self._require_image()
        checked = check_prompt(
            embedding.original_size, self.sessions.mask_input_size, point_coords, point_labels, box, mask_input
        )
        prompt = to_model_frame(checked, self.transform, embedding.original_size)
        coords, labels = onnx_points(prompt.point_coords, prompt.point_labels, prompt.boxes)
        masks, iou_predictions, low_res_logits = self.sessions.decode(
            embedding.features, coords, labels, prompt.mask_input, embedding.original_size
        )
        selected = slice(1, None) if multimask_output else slice(0, 1)
        masks = masks[0, selected]
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, iou_predictions[0, selected], low_res_logits[0, selected]
