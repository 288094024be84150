"""The torch backends: eager fp32 (the reference numerics), and rewritten or compiled encoder copies."""

from __future__ import annotations

import copy
import itertools
import threading
import warnings

import torch

from ..families import family_of
from ..fast_decoder import upscaled_masks
from ..modeling import Sam
from ..modeling.transformer import ImageTokens, factored_attention, fused_attention
from ..registry import config_of
from .base import Backend, CandidateFilter, Candidates, tensors_stamp

# Segment-everything's prompts run through the decoder this many at a time.
# Small batches keep the per-prompt image tokens in cache and are several
# times faster than 64 on a CPU; a batch of 1 takes other kernels, so a lone
# last prompt joins the batch before it.
_DECODE_CHUNK = 6


class TorchBackend(Backend):
    """The model's own modules in eager fp32: the reference numerics.

    Clicks on one image without a mask prompt all start the transformer from
    the same image tokens, so their prompt-independent part (`ImageTokens`:
    the positional encoding and the first layer's image projections) is kept
    for the last embedding seen, and reused while neither that embedding nor
    the decoder's weights change. The masks are the same bits either way.
    """

    name = "torch"
    parallel_batches = True

    def __init__(self, model: Sam) -> None:
        self.model = model
        self._kept_image: tuple[torch.Tensor, tuple[int, ...], ImageTokens] | None = None
        self._kept_lock = threading.Lock()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.image_encoder(images)

    def decode(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        points = None if point_coords is None else (point_coords, point_labels)
        prompt_encoder, mask_decoder = self.model.prompt_encoder, self.model.mask_decoder
        sparse_embeddings, dense_embeddings = prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        image = self._image_tokens(image_embeddings, dense_embeddings, has_mask_prompt=mask_input is not None)
        tokens, image_features = mask_decoder.run_transformer(image, sparse_embeddings)
        low_res_logits = self._masks_from_weights(mask_decoder.mask_weights(tokens), image_features)
        iou_predictions = mask_decoder.predict_iou(tokens)
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return low_res_logits[:, selected], iou_predictions[:, selected]

    def decode_candidates(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, keep: CandidateFilter) -> Candidates:
        """The IoU head runs first; masks are made only for prompts with a kept candidate.

        The transformer runs in cache-sized chunks; a chunk's image features
        are dropped as soon as it is done unless one of its prompts has a
        kept candidate. The IoU head and the hypernetworks see as many rows
        as the whole batch, as in the reference: small matrix products round
        by row count, never by what is in the other rows.
        """
        prompt_encoder, decoder = self.model.prompt_encoder, self.model.mask_decoder
        batch = len(point_coords)
        _, no_mask_dense = prompt_encoder(points=None, boxes=None, masks=None)
        image = self._image_tokens(image_embeddings, no_mask_dense, has_mask_prompt=False)
        tokens, iou_predictions, kept_features = [], [], []
        for chunk in _decoder_chunks(batch):
            points = point_coords[chunk, None, :]
            labels = torch.ones(points.shape[:2], dtype=torch.int, device=points.device)
            sparse, _ = prompt_encoder(points=(points, labels), boxes=None, masks=None)
            chunk_tokens, chunk_features = decoder.run_transformer(image, sparse)
            head_input = chunk_tokens.new_zeros((batch, *chunk_tokens.shape[1:]))
            head_input[: len(chunk_tokens)] = chunk_tokens
            chunk_iou = decoder.predict_iou(head_input)[: len(chunk_tokens), 1:]  # (chunk, 3) multimask outputs
            chunk_kept = keep(chunk_iou).any(dim=1)
            if chunk_kept.all():
                kept_features.append((chunk, chunk_features))
            elif chunk_kept.any():
                # Selected in token-major order: they stay the transposed view of contiguous tokens the upscaling reads.
                kept_tokens = chunk_features.flatten(2).transpose(1, 2)[chunk_kept]  # (K, HW, C)
                kept_features.append((chunk, kept_tokens.transpose(1, 2).unflatten(2, chunk_features.shape[2:])))
            tokens.append(chunk_tokens)
            iou_predictions.append(chunk_iou)
        iou_predictions_t = torch.cat(iou_predictions)
        kept = keep(iou_predictions_t)
        if not kept.any():
            return Candidates(iou_predictions_t, kept, iou_predictions_t.new_zeros((0, *prompt_encoder.mask_input_size)))
        mask_weights = decoder.mask_weights(torch.cat(tokens))  # (B, 4, C/8)
        # Upscale only the prompts with a candidate left, and only their kept
        # masks, one transformer chunk at a time: the upscaling's temporaries
        # then stay small enough for the allocator to reuse instead of mapping
        # fresh pages. Its results do not depend on the group size.
        prompts = kept.any(dim=1)
        low_res_logits = torch.cat(
            [self._masks_from_weights(mask_weights[chunk][prompts[chunk]], features)[:, 1:] for chunk, features in kept_features]
        )[kept[prompts]]
        return Candidates(iou_predictions_t, kept, low_res_logits)

    def _masks_from_weights(self, mask_weights: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """(B, M, 4H, 4W) logits from (B, M, C/8) mask weights and (B, C, H, W) features: the model's own upscaling."""
        return self.model.mask_decoder.masks_from_weights(mask_weights, image_features)

    def _image_tokens(
        self, image_embeddings: torch.Tensor, dense_embeddings: torch.Tensor, *, has_mask_prompt: bool
    ) -> ImageTokens:
        """`prepare_image`; without a mask prompt or gradients, from the kept copy while it is still valid.

        A mask prompt makes the dense embeddings depend on the prompt, and
        training needs the graph, so only inference without a mask reuses.
        """
        decoder, prompt_encoder = self.model.mask_decoder, self.model.prompt_encoder
        if has_mask_prompt or torch.is_grad_enabled():
            return decoder.prepare_image(image_embeddings, prompt_encoder.get_dense_pe(), dense_embeddings)
        stamp = self._stamp(image_embeddings)
        # Segment-everything's workers ask at once: the first computes, the others wait and reuse.
        with self._kept_lock:
            kept = self._kept_image
            if stamp is not None and kept is not None and kept[0] is image_embeddings and kept[1] == stamp:
                # The positional encoding (sines of 64x64 positions) is made only with new tokens.
                return kept[2]
            image = decoder.prepare_image(image_embeddings, prompt_encoder.get_dense_pe(), dense_embeddings)
            self._kept_image = None if stamp is None else (image_embeddings, stamp, image)
        return image

    def _stamp(self, image_embeddings: torch.Tensor) -> tuple[int, ...] | None:
        """Changes whenever the embedding or a prompt-encoder/decoder tensor is written in place or replaced."""
        modules = (self.model.prompt_encoder, self.model.mask_decoder)
        return tensors_stamp([image_embeddings, *(t for m in modules for t in itertools.chain(m.parameters(), m.buffers()))])


class FastTorchDecoding(TorchBackend):
    """The model's prompt encoder and decoder in fp32, with torch's fused attention kernel
    (`modeling.transformer.fused_attention`), the cross-attentions' image-side products taken through
    the prompt tokens (`modeling.transformer.factored_attention`) and the upscaling as matrix products
    (`mobilesam.fast_decoder`).

    Within fp32 rounding of `TorchBackend`'s masks (about 1e-5 on logits of magnitude 10), and a
    click about twice as fast on a CPU. The decoding of every fast backend; its
    `embed` is the model's own encoder.
    """

    # Its numerics are torch-fast's decoding; the graph backends that decode in torch use it as it is.
    name = "torch-fast"

    def __init__(self, model: Sam, *, bf16_candidates: bool = False) -> None:
        """`bf16_candidates`: an engine asked for in reduced precision (`half=True`, a bf16/int8 name) also
        decodes segment-everything's batches in bf16, on a bf16 copy of the decoder, where the device
        computes bf16 natively (AMX or AVX-512 BF16; CUDA 8.0+). Clicks stay fp32.
        """
        super().__init__(model)
        device = next(model.parameters()).device
        self._bf16_candidates = FastTorchDecoding(_Bf16Decoding(model)) if bf16_candidates and has_native_bf16(device) else None

    def decode(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with fused_attention(), factored_attention():
            return super().decode(image_embeddings, point_coords, point_labels, boxes, mask_input, multimask_output)

    def decode_candidates(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, keep: CandidateFilter) -> Candidates:
        with fused_attention(), factored_attention():
            if self._bf16_candidates is None:
                return super().decode_candidates(image_embeddings, point_coords, keep)
            decoded = self._bf16_candidates.decode_candidates(
                image_embeddings.bfloat16(), point_coords, lambda iou_predictions: keep(iou_predictions.float())
            )
        return Candidates(decoded.iou_predictions.float(), decoded.kept, decoded.low_res_logits.float())

    def _masks_from_weights(self, mask_weights: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        return upscaled_masks(self.model.mask_decoder, mask_weights, image_features)


class TorchFastBackend(FastTorchDecoding):
    """Eager torch with inference-only rewrites of a copy of the encoder, in fp32, and fast decoding.

    The encoder is copied when the backend is made: weights loaded into the
    model afterwards are not seen; make a new backend after loading.
    """

    name = "torch-fast"
    # The dtype the encoder computes in; clicks always decode in fp32.
    encoder_dtype = torch.float32

    def __init__(self, model: Sam) -> None:
        super().__init__(model, bf16_candidates=self.encoder_dtype != torch.float32)
        self.encoder = _fast_encoder(model)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        autocast = self.encoder_dtype != torch.float32
        with torch.inference_mode(), torch.autocast(images.device.type, self.encoder_dtype, enabled=autocast):
            embedding = self.encoder(images.contiguous(memory_format=torch.channels_last))
        # Out of inference mode and back to the plain fp32 layout, so callers may use it anywhere.
        return embedding.float().contiguous().clone()


class TorchBf16Backend(TorchFastBackend):
    """torch-fast's encoder copy under bfloat16 autocast; clicks decode in fp32, segment everything in bf16.

    Warns (RuntimeWarning) where the model's device has no native bf16.
    """

    name = "torch-bf16"
    encoder_dtype = torch.bfloat16

    def __init__(self, model: Sam) -> None:
        super().__init__(model)
        device = next(model.parameters()).device
        if not has_native_bf16(device):
            warnings.warn(
                f"backend 'torch-bf16': this {device.type.upper()} has no native bf16 (AVX-512 BF16 or AMX on CPUs), "
                "so bf16 is emulated and many times slower than fp32; use 'torch-fast' for the same speed-ups in fp32",
                RuntimeWarning,
                stacklevel=2,
            )


class TorchCompileBackend(FastTorchDecoding):
    """torch-fast's encoder copy, compiled by TorchInductor on the first `embed`.

    Freezing turns the weights into constants, so inductor prepacks them for
    oneDNN's convolutions and fuses the element-wise work in between. Like
    torch-fast, weights loaded into the model later are not seen.
    """

    name = "torch-compile"

    def __init__(self, model: Sam) -> None:
        super().__init__(model)
        self.encoder = torch.compile(_fast_encoder(model))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        from torch._inductor import config as inductor_config

        # Patched around each call rather than set: compiling happens inside
        # the first one, and other compiled code in the process keeps its own
        # settings (`torch.compile(options=...)` does not freeze the same way).
        with inductor_config.patch(freezing=True), torch.inference_mode():
            embedding = self.encoder(images.contiguous(memory_format=torch.channels_last))
        return embedding.contiguous().clone()


class _Bf16Decoding(torch.nn.Module):
    """A model's decoder copied in bf16, with its prompt encoder kept fp32 and its outputs cast to bf16.

    The prompt encoder stays fp32: its Fourier features of point coordinates
    need fp32's precision, and it is a small part of the work. The copy is
    made once: weights loaded into the model later are not seen.
    """

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.prompt_encoder = _Bf16Prompts(model.prompt_encoder)
        self.mask_decoder = copy.deepcopy(model.mask_decoder).to(torch.bfloat16)


class _Bf16Prompts(torch.nn.Module):
    """A prompt encoder whose embeddings come out in bf16."""

    def __init__(self, prompt_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.fp32 = prompt_encoder
        self.mask_input_size = prompt_encoder.mask_input_size

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse_embeddings, dense_embeddings = self.fp32(points=points, boxes=boxes, masks=masks)
        if masks is None:
            # The no-mask embedding expanded over the batch: cast once, not once per prompt.
            return sparse_embeddings.bfloat16(), dense_embeddings[:1].bfloat16().expand_as(dense_embeddings)
        return sparse_embeddings.bfloat16(), dense_embeddings.bfloat16()

    def get_dense_pe(self) -> torch.Tensor:
        return self.fp32.get_dense_pe().bfloat16()


def _fast_encoder(model: Sam) -> torch.nn.Module:
    """The copy of `model`'s encoder that torch-fast and torch-compile run: its family's rewrite, if it has one.

    Without one, an eval-mode, channels-last copy as it is.
    """
    rewrite = family_of(config_of(model).encoder).fast_encoder
    if rewrite is not None:
        return rewrite(model)
    return copy.deepcopy(model.image_encoder).eval().to(memory_format=torch.channels_last)


def _decoder_chunks(n: int) -> list[slice]:
    """Slices of at most `_DECODE_CHUNK` prompts covering range(n), none of size 1 unless n == 1."""
    starts = list(range(0, n, _DECODE_CHUNK))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [slice(start, end) for start, end in zip(starts, starts[1:] + [n])]


def has_native_bf16(device: torch.device) -> bool:
    """True where `device` computes bf16 in hardware, so bf16 is faster than fp32 there.

    On a CPU: oneDNN's check for AVX-512 BF16 or AMX; on CUDA: compute capability 8.0 or later.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
