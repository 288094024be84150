"""SAM's two-way transformer: prompt tokens and image tokens attend to each other."""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import MLPBlock


class Attention(nn.Module):
    """Multi-head attention whose projections may shrink the width by `downsample_rate`."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide the internal width ({self.internal_dim})")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, heads, N, hd)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q_proj(q), self.k_proj(k), self.v_proj(v)
        # Only for batches: with one prompt, the head-major views need no copy
        # and stay on the kernels the reference uses.
        if q.shape[0] > 1 and k.shape[1] > q.shape[1]:
            return self.out_proj(self._attend_per_head(q, k, v))
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        attn = (q @ k.permute(0, 1, 3, 2)) / math.sqrt(q.shape[-1])  # (B, heads, Nq, Nk)
        out = torch.softmax(attn, dim=-1) @ v
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.internal_dim))

    def _attend_per_head(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Few queries over many keys, one head at a time: (B, Nq, D) from (B, N, D) projections.

        Batched over heads, the keys and values would first be copied into
        head-major order; a head's columns are a strided view that the matrix
        products read in place, with the same sums.
        """
        head_dim = self.internal_dim // self.num_heads
        scale = math.sqrt(head_dim)
        b, n = q.shape[:2]
        outputs = []
        for start in range(0, self.internal_dim, head_dim):
            heads = slice(start, start + head_dim)
            if k.shape[0] == 1:
                # Keys shared by the batch: all B * Nq queries in one product.
                attn = (q[..., heads].reshape(b * n, head_dim) @ k[0, :, heads].T).view(b, n, -1) / scale
                probs = torch.softmax(attn, dim=-1)
                outputs.append((probs.view(b * n, -1) @ v[0, :, heads]).view(b, n, head_dim))
            else:
                attn = torch.bmm(q[..., heads], k[..., heads].transpose(1, 2)) / scale  # (B, Nq, Nk)
                outputs.append(torch.bmm(torch.softmax(attn, dim=-1), v[..., heads]))  # (B, Nq, head_dim)
        return torch.cat(outputs, dim=-1)


class TwoWayAttentionBlock(nn.Module):
    """Self-attention of tokens, tokens->image, token MLP, image->tokens; post-norm."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int,
        skip_first_layer_pe: bool,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            # The first layer's queries are the prompt embeddings themselves, PE included.
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        k = keys + key_pe  # keys stay unchanged until norm4, so this serves both cross-attentions
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=k, v=keys))

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        # Added into the fresh, contiguous attention output: the sum is laid out
        # like it, not like the first layer's channel-major keys (the norm would
        # copy those), and needs no (B, HW, C) buffer of its own.
        keys = self.norm4(self.cross_attn_image_to_token(q=k, k=q, v=queries).add_(keys))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Decoder transformer of SAM.

    Args:
        depth: Number of two-way blocks.
        embedding_dim: Token width.
        num_heads: Attention heads.
        mlp_dim: Hidden width of the token MLP.
        attention_downsample_rate: Width reduction inside cross-attention.
    """

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate, skip_first_layer_pe=i == 0)
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the transformer.

        Args:
            image_embedding: (B, C, H, W), or (1, C, H, W) shared by all B prompts:
                the first layer then works on one copy, and broadcasting gives
                every prompt its own image tokens from there on.
            image_pe: (1, C, H, W) positional encoding of the image tokens.
            point_embedding: (B, N, C) output and prompt tokens.

        Returns:
            The processed tokens (B, N, C) and image tokens (B, H*W, C).
        """
        # The positional encoding is copied token-major once, so that every add
        # of it streams through memory. The image tokens stay a channel-major
        # view: the first layer's projections read them as the reference does,
        # and a contiguous copy would round differently there.
        keys = image_embedding.flatten(2).transpose(1, 2)  # (B, HW, C)
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=key_pe)
        q = queries + point_embedding
        k = keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=k, v=keys))
        return queries, keys
