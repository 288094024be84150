"""`OnnxPredictor`: `SamPredictor`'s interface over an export folder, in any runtime of `RUNTIMES`, on numpy.

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
from ..transforms import ResizeLongestSide
from .engines import open_sessions
from .layout import METADATA_FILE
from .runtimes import open_export
from .sessions import onnx_points


class OnnxPredictor(CurrentImage[np.ndarray]):
    """Embed an image once with the exported encoder, then predict masks from prompts with the exported decoder.

    The methods and return values are `SamPredictor`'s, on numpy arrays
    (`set_image`, `embed`, `predict`, `features`, `set_embedding`, `reset_image`).
    Any export folder a runtime here runs will do: ONNX, ExecuTorch, LiteRT, ncnn,
    TorchScript (`runtime.RUNTIMES`).

    Args:
        onnx_dir: A folder written by `mobilesam export`.
        backend: A graph backend's name for ONNX folders: "onnx" (onnxruntime, fp32), "onnx-int8",
            "openvino", "openvino-bf16", "openvino-int8" (`runtime.GRAPH_BACKENDS`); None: `runtime`.
        runtime: A runtime's name (`runtime.RUNTIMES`); None: the first that runs the folder's format.
        variant: A reduced-precision encoder the folder holds ("int8", "fp16", ...), with `runtime`.
        threads: Intra-op threads; None lets the runtime choose (one per core).

    Raises:
        FileNotFoundError: Not an export folder, or a graph is missing.
        ValueError: Not a graph backend or runtime, or a sidecar without the pre-processing constants.
        ImportError: The runtime is not installed.
    """

    def __init__(
        self,
        onnx_dir: str | Path,
        *,
        backend: str | None = None,
        runtime: str | None = None,
        variant: str | None = None,
        threads: int | None = None,
    ) -> None:
        if backend is not None:
            if runtime is not None or variant is not None:
                raise ValueError("give either a graph backend's name or a runtime (and variant), not both")
            self.sessions = open_sessions(onnx_dir, backend, threads=threads)
        else:
            self.sessions = open_export(onnx_dir, runtime=runtime, variant=variant, threads=threads)
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
        features = self.sessions.embed_resized(resized, self.pixel_mean, self.pixel_std)
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
