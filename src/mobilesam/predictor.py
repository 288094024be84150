"""`SamPredictor`: embed an image once, then predict masks for many prompts.

A drop-in for `segment_anything.SamPredictor` / `mobile_sam.SamPredictor`:
same methods, arguments, shapes and return types, plus input checks that
raise `ValueError` instead of failing deep inside the model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .backends import Backend, make_backend
from .backends.base import weights_stamp
from .embedding import ImageEmbedding
from .embedding_store import EmbeddingStore, EmbeddingStoreError
from .image_state import CurrentImage
from .io.images import to_rgb_uint8
from .modeling import Sam
from .prompts import ModelFramePrompt, Prompt, check_prompt, to_model_frame
from .transforms import ResizeLongestSide


class SamPredictor(CurrentImage[torch.Tensor]):
    """Computes an image embedding once and predicts masks from prompts on it.

    Args:
        sam_model: The model; it stays in whatever mode and on whatever device it is.
        backend: What runs the encoder and decoder: a `mobilesam.backends` backend or its
            name. Default "auto": the fastest engine on this machine whose masks reproduce
            fp32's (`fidelity.FAITHFUL`; a graph engine exports the model on first use).
            "torch" runs the model's own modules in eager fp32: the reference's bits. The
            other engines run a copy of the encoder; one made here from a name is made
            again when the model's weights change (a backend object given is used as it is).
        embeddings: An `EmbeddingStore`, or its folder, that `embed` and `set_image` read
            first: an image whose pixels are stored skips the encoder, and one that is not
            is embedded and stored. None: embed every image.

    Raises:
        EmbeddingStoreError: The store holds another model's embeddings, or a store with a
            reduced-precision (bf16, int8) engine.
    """

    def __init__(
        self,
        sam_model: Sam,
        backend: Backend | str = "auto",
        embeddings: EmbeddingStore | str | os.PathLike[str] | None = None,
    ) -> None:
        self.model = sam_model
        if embeddings is not None and not isinstance(embeddings, EmbeddingStore):
            embeddings = EmbeddingStore(embeddings, sam_model)
        if embeddings is not None:
            embeddings.check_model(sam_model)
        self.embeddings = embeddings
        self._backend_name = backend if isinstance(backend, str) else None
        self._weights_stamp = weights_stamp(sam_model)
        self.backend = make_backend(backend, sam_model) if isinstance(backend, str) else backend
        if embeddings is not None and self.backend.spec.precision != "fp32":
            # The store names the model, not the engine: reduced-precision embeddings would pass for fp32's later.
            raise EmbeddingStoreError(
                f"the {self.backend.spec.label} engine cannot fill the embedding store {embeddings.root}: "
                "its embeddings would pass for the fp32 model's; use an fp32 engine (the default, without --half)"
            )
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        super().__init__()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def embed(self, image: np.ndarray, image_format: str = "RGB") -> ImageEmbedding[torch.Tensor]:
        """The embedding of an image, leaving the current image as it is (`set_image` makes it current).

        Args:
            image: (H, W, 3) uint8 image; grayscale, RGBA, 16-bit and float
                images are converted (see `mobilesam.io.to_rgb_uint8`).
            image_format: "RGB" or "BGR" (what `cv2.imread` returns).
        """
        rgb = to_rgb_uint8(image, image_format)
        if self.embeddings is None:
            return self._embed_rgb(rgb)
        self.embeddings.check_model(self.model)
        return self.embeddings.embedding(rgb, self._embed_rgb, self.device)

    def _embed_rgb(self, rgb: np.ndarray) -> ImageEmbedding[torch.Tensor]:
        if self.model.image_format == "BGR":
            rgb = rgb[..., ::-1]
        resized = self.transform.apply_image(rgb)
        image_torch = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        return self._embed_resized(image_torch, rgb.shape[:2])

    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """Compute the embedding of an image already resized with `self.transform`.

        Args:
            transformed_image: (1, 3, H, W) with values in [0, 255] and the long side equal to the model input size.
            original_image_size: (H, W) of the image before resizing.
        """
        self.reset_image()  # a failing encoder leaves no stale image behind
        self.set_embedding(self._embed_resized(transformed_image, original_image_size))

    @torch.no_grad()
    def _embed_resized(
        self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]
    ) -> ImageEmbedding[torch.Tensor]:
        size = self.model.image_encoder.img_size
        shape = tuple(transformed_image.shape)
        if len(shape) != 4 or shape[0] != 1 or shape[1] != 3 or max(shape[2:]) != size:
            raise ValueError(f"set_torch_image expects a (1, 3, H, W) image whose long side is {size}, got {shape}")
        features = self._current_backend().embed(self.model.preprocess(transformed_image))
        return ImageEmbedding(features, (original_image_size[0], original_image_size[1]), (shape[2], shape[3]))

    def _current_backend(self) -> Backend:
        """The backend, made again from its name if it runs a copy of weights that have changed since."""
        stamp = weights_stamp(self.model)
        if self._backend_name is not None and stamp != self._weights_stamp and not self.backend.spec.reference_numerics:
            self.backend = make_backend(self._backend_name, self.model)
        self._weights_stamp = stamp
        return self.backend

    def reset_image(self) -> None:
        """Forget the current image and the images of `set_image_batch`."""
        super().reset_image()
        self._batch: list[ImageEmbedding[torch.Tensor]] | None = None

    def set_image_batch(self, images: Sequence[np.ndarray], image_format: str = "RGB") -> None:
        """Embed several images for `predict_batch`, each as `set_image` would (sam2's predictor API).

        Args:
            images: A list of (H, W, 3) images, of any sizes.
            image_format: "RGB" or "BGR", for all of them.

        Raises:
            ValueError: Not a non-empty list, or an image `set_image` would refuse.
        """
        if not isinstance(images, (list, tuple)) or not images:
            raise ValueError(f"set_image_batch takes a non-empty list of (H, W, 3) images, got {type(images).__name__}")
        self.reset_image()
        self._batch = [self.embed(image, image_format) for image in images]

    def predict_batch(
        self,
        point_coords_batch: Sequence[Any] | None = None,
        point_labels_batch: Sequence[Any] | None = None,
        box_batch: Sequence[Any] | None = None,
        mask_input_batch: Sequence[Any] | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Predict masks on every image of `set_image_batch`, each with its own prompts (sam2's API).

        Each `*_batch` is None or holds one entry per image (None where that
        image lacks the kind of prompt). Per image, as in `predict` for one
        object: points (N, 2), labels (N,), a box (4,), a mask (1, 256, 256);
        or for B objects at once: points (B, N, 2), labels (B, N), boxes (B, 4),
        masks (B, 1, 256, 256). Images may have different numbers of objects.

        Returns:
            Per image: masks (C, H, W), or (B, C, H, W) for B objects given as
            such; iou_predictions (C,) or (B, C); low_res_logits (C, 256, 256) or (B, C, 256, 256).

        Raises:
            RuntimeError: `set_image_batch` was not called.
            ValueError: A list of the wrong length, or a prompt `predict` would refuse (naming the image).
        """
        if self._batch is None:
            raise RuntimeError("no image batch is set: call .set_image_batch(images) before predict_batch")
        per_image = []
        for name, values in (
            ("point_coords_batch", point_coords_batch),
            ("point_labels_batch", point_labels_batch),
            ("box_batch", box_batch),
            ("mask_input_batch", mask_input_batch),
        ):
            if values is not None and len(values) != len(self._batch):
                raise ValueError(f"{name} has {len(values)} entries for {len(self._batch)} images")
            per_image.append([None] * len(self._batch) if values is None else list(values))
        outputs: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
        for index, (embedding, *prompt) in enumerate(zip(self._batch, *per_image)):
            try:
                predicted = self._predict_objects(embedding, *prompt, multimask_output, return_logits)
            except ValueError as err:
                raise ValueError(f"image {index} of the batch: {err}") from None
            for output, value in zip(outputs, predicted):
                output.append(value)
        return outputs

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for one object on the current image.

        Args:
            point_coords: (N, 2) XY pixels in the original image.
            point_labels: (N,) 1 foreground, 0 background.
            box: (4,) XYXY pixels in the original image.
            mask_input: (1, 256, 256) low-res logits from a previous call.
            multimask_output: Return 3 masks (best for a single ambiguous click) instead of 1.
            return_logits: Return mask logits instead of booleans.

        Returns:
            masks: (C, H, W) bool (or float logits) at the original size, C = 3 or 1.
            iou_predictions: (C,) predicted mask quality.
            low_res_logits: (C, 256, 256), to feed back as `mask_input`.
        """
        embedding = self._require_image()
        prompt = check_prompt(
            embedding.original_size, self.model.prompt_encoder.mask_input_size, point_coords, point_labels, box, mask_input
        )
        return self.predict_prompt(prompt, multimask_output, return_logits)

    def predict_prompt(
        self, prompt: Prompt, multimask_output: bool = True, return_logits: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`predict` for a prompt already checked against the current image (`mobilesam.prompts.check_prompt`).

        For callers that check their prompts at their own boundary (a prompts
        file, the service) before the image is embedded.
        """
        masks, iou_predictions, low_res_logits = self.decode_prompts(
            self._require_image(), [prompt], multimask_output, return_logits
        )
        return masks[0], iou_predictions[0], low_res_logits[0]

    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict masks for B objects at once, prompts already in the model frame.

        Transform coordinates with `self.transform.apply_coords_torch` /
        `apply_boxes_torch` first.

        Args:
            point_coords: (B, N, 2) XY, model frame.
            point_labels: (B, N) 1 foreground, 0 background.
            boxes: (B, 4) XYXY, model frame.
            mask_input: (B, 1, 256, 256) low-res logits.
            multimask_output: 3 masks per object instead of 1.
            return_logits: Logits instead of booleans.

        Returns:
            masks (B, C, H, W) at the original size, iou_predictions (B, C),
            low_res_logits (B, C, 256, 256).
        """
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        if point_coords is not None and point_coords.shape[:2] != point_labels.shape[:2]:
            raise ValueError(
                f"point_coords (B, N, 2) and point_labels (B, N) disagree: {tuple(point_coords.shape)} vs {tuple(point_labels.shape)}"
            )
        return self._decode(self._require_image(), point_coords, point_labels, boxes, mask_input, multimask_output, return_logits)

    def _predict_objects(
        self,
        embedding: ImageEmbedding[torch.Tensor],
        point_coords: Any,
        point_labels: Any,
        box: Any,
        mask_input: Any,
        multimask_output: bool,
        return_logits: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`predict` on `embedding`, for one object or for B objects given with a leading batch axis."""
        objects = _object_count(point_coords, box, mask_input)
        mask_size = self.model.prompt_encoder.mask_input_size
        if objects is None:
            prompts = [check_prompt(embedding.original_size, mask_size, point_coords, point_labels, box, mask_input)]
        else:
            prompts = [
                check_prompt(
                    embedding.original_size,
                    mask_size,
                    *(None if part is None else np.asarray(part)[b] for part in (point_coords, point_labels, box, mask_input)),
                )
                for b in range(objects)
            ]
        outputs = self.decode_prompts(embedding, prompts, multimask_output, return_logits)
        return tuple(output[0] for output in outputs) if objects is None else outputs

    def decode_prompts(
        self,
        embedding: ImageEmbedding[torch.Tensor],
        prompts: Sequence[Prompt],
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """B objects' checked prompts decoded together on any embedding; the current image is left as it is.

        The objects must agree in shape (number of points, a box or not, a mask
        or not); `mobilesam.segment.segment_prompts` groups them for you.

        Returns:
            masks (B, C, H, W) bool (or float logits with `return_logits`), iou_predictions (B, C),
            low_res_logits (B, C, 256, 256).

        Raises:
            ValueError: The objects' prompts differ in shape.
        """
        if len({prompt.layout for prompt in prompts}) > 1:
            layouts = sorted({prompt.layout for prompt in prompts}, key=str)
            raise ValueError(f"objects decoded together need prompts of one shape (points, box, mask), got {layouts}")
        framed = [to_model_frame(prompt, self.transform, embedding.original_size) for prompt in prompts]
        parts = [None if value is None else np.concatenate(value) for value in _transpose(framed)]
        decoded = self._decode(embedding, *self._tensors(ModelFramePrompt(*parts)), multimask_output, return_logits)
        return tuple(_to_numpy(t) for t in decoded)

    def _tensors(self, prompt: ModelFramePrompt) -> tuple[torch.Tensor | None, ...]:
        return tuple(
            None if value is None else torch.as_tensor(value, dtype=dtype, device=self.device)
            for value, dtype in (
                (prompt.point_coords, torch.float),
                (prompt.point_labels, torch.int),
                (prompt.boxes, torch.float),
                (prompt.mask_input, torch.float),
            )
        )

    @torch.no_grad()
    def _decode(
        self,
        embedding: ImageEmbedding[torch.Tensor],
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
        return_logits: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The backend's decoder on `embedding`, masks upscaled to its image: `predict_torch`'s outputs."""
        low_res_logits, iou_predictions = self.backend.decode(
            embedding.features, point_coords, point_labels, boxes, mask_input, multimask_output
        )
        masks = self.model.postprocess_masks(low_res_logits, embedding.input_size, embedding.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou_predictions, low_res_logits


def _object_count(point_coords: Any, box: Any, mask_input: Any) -> int | None:
    """B where a prompt of `predict_batch` has a leading objects axis, None for one object as in `predict`."""
    counts = set()
    if point_coords is not None and np.ndim(point_coords) == 3:
        counts.add(np.shape(point_coords)[0])
    if box is not None and np.ndim(box) == 2 and np.shape(box)[0] > 1:
        counts.add(np.shape(box)[0])
    if mask_input is not None and np.ndim(mask_input) == 4:
        counts.add(np.shape(mask_input)[0])
    if len(counts) > 1:
        raise ValueError(f"the prompts disagree on the number of objects: {sorted(counts)}")
    return counts.pop() if counts else None


def _transpose(prompts: list[ModelFramePrompt]) -> list[list[np.ndarray] | None]:
    """Per field of `ModelFramePrompt`, the objects' arrays (None where the objects have none)."""
    fields = zip(*((p.point_coords, p.point_labels, p.boxes, p.mask_input) for p in prompts))
    return [None if any(value is None for value in values) else list(values) for values in fields]


def _to_numpy(tensor: torch.Tensor) -> Any:
    if tensor.is_floating_point():
        tensor = tensor.float()
    return tensor.detach().cpu().numpy()
