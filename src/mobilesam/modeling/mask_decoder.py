"""SAM's mask decoder: output tokens, two-way transformer, hypernetwork masks, IoU head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d
from .transformer import ImageTokens, TwoWayTransformer


class MLP(nn.Module):
    """ReLU MLP with `num_layers` linear layers."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


class MaskDecoder(nn.Module):
    """Predicts mask logits and their quality from image and prompt embeddings.

    Args:
        transformer_dim: Channel width of the transformer.
        transformer: The two-way transformer.
        num_multimask_outputs: Masks predicted for an ambiguous prompt.
        iou_head_depth: Layers of the IoU prediction MLP.
        iou_head_hidden_dim: Hidden width of the IoU prediction MLP.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks for B prompts on one image.

        Args:
            image_embeddings: (1, C, H, W), or (B, C, H, W) one per prompt.
            image_pe: (1, C, H, W) positional encoding of the embedding grid.
            sparse_prompt_embeddings: (B, N, C).
            dense_prompt_embeddings: (B, C, H, W).
            multimask_output: Return the 3 disambiguating masks instead of the single one.

        Returns:
            low_res_logits: (B, M, 4H, 4W) mask logits, M = 3 or 1.
            iou_predictions: (B, M).
        """
        low_res_logits, iou_predictions = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return low_res_logits[:, selected], iou_predictions[:, selected]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All `num_mask_tokens` masks and IoU predictions; see `forward`."""
        image = self.prepare_image(image_embeddings, image_pe, dense_prompt_embeddings)
        tokens, image_features = self.run_transformer(image, sparse_prompt_embeddings)
        return self.masks_from_tokens(tokens, image_features), self.predict_iou(tokens)

    def prepare_image(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense_prompt_embeddings: torch.Tensor
    ) -> ImageTokens:
        """The transformer's prompt-independent work on the image, reusable by `run_transformer`.

        Args:
            image_embeddings: (1, C, H, W), or (B, C, H, W) one per prompt.
            image_pe: (1, C, H, W).
            dense_prompt_embeddings: (B, C, H, W), or (1, C, H, W) for every prompt.
        """
        if image_embeddings.shape[0] == 1 and _same_for_every_prompt(dense_prompt_embeddings):
            # Every prompt sees the same image tokens: the transformer's first
            # layer projects them once instead of once per prompt.
            src = image_embeddings + dense_prompt_embeddings[:1]
        else:
            batch = dense_prompt_embeddings.shape[0]
            src = image_embeddings.expand(batch, -1, -1, -1) + dense_prompt_embeddings
        return self.transformer.prepare_image(src, image_pe)

    def run_transformer(self, image: ImageTokens, sparse_prompt_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two-way transformer: output tokens (B, 1 + M + N, C) and image features (B, C, H, W).

        Split from the mask head so a caller can read the IoU predictions and
        upscale masks only for the prompts it keeps.
        """
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)  # (B, 1 + M + N, C)
        tokens, image_tokens = self.transformer.decode(image, tokens)
        h, w = image.size
        return tokens, image_tokens.transpose(1, 2).view(batch, -1, h, w)

    def predict_iou(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, M) predicted IoU of every mask token, from `run_transformer`'s output tokens."""
        return self.iou_prediction_head(tokens[:, 0, :])

    def masks_from_tokens(self, tokens: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """(B, M, 4H, 4W) mask logits from `run_transformer`'s outputs."""
        return self.masks_from_weights(self.mask_weights(tokens), image_features)

    def mask_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, M, C/8): each mask token through its hypernetwork MLP, from `run_transformer`'s output tokens."""
        mask_tokens_out = tokens[:, 1 : 1 + self.num_mask_tokens, :]
        return torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)

    def masks_from_weights(self, mask_weights: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """(B, M, 4H, 4W) mask logits: `mask_weights` (B, M, C/8) applied to the upscaled image features."""
        upscaled = self.output_upscaling(image_features)  # (B, C/8, 4H, 4W)
        b, c, h, w = upscaled.shape
        return (mask_weights @ upscaled.view(b, c, h * w)).view(b, -1, h, w)


def _same_for_every_prompt(dense_prompt_embeddings: torch.Tensor) -> bool:
    """True when the dense embedding is one tensor broadcast over the batch (no mask prompts)."""
    return dense_prompt_embeddings.shape[0] == 1 or dense_prompt_embeddings.stride(0) == 0
