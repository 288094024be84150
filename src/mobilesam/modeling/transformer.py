"""SAM's two-way transformer: prompt tokens and image tokens attend to each other."""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLPBlock

# Set by `fused_attention()` and `factored_attention()`, per thread (and asyncio task).
_FUSED = contextvars.ContextVar("mobilesam_fused_attention", default=False)
_FACTORED = contextvars.ContextVar("mobilesam_factored_attention", default=False)


@contextlib.contextmanager
def fused_attention() -> Iterator[None]:
    """Within it, `Attention` runs torch's fused kernel (`scaled_dot_product_attention`).

    Several times faster on a CPU for the decoder's 4096 image tokens over a
    handful of prompt tokens, and within fp32 rounding of the written-out
    product and softmax (about 1e-7), so only backends whose names say they
    are not the reference numerics use it. It applies to this thread only.
    """
    token = _FUSED.set(True)
    try:
        yield
    finally:
        _FUSED.reset(token)


@contextlib.contextmanager
def factored_attention() -> Iterator[None]:
    """Within it, the cross-attentions take their products with the image tokens through the prompt tokens.

    Each cross-attention between the HW image tokens and the T prompt tokens
    projects every image token (token->image keys and values, image->token
    queries and output), (HW, C) x (C, D) products. Each projection meets a
    head's few prompt tokens right after, so it can be moved onto them:

    - token->image scores: q_h . (W_k,h x + b_k,h) = (q_h W_k,h) . x + q_h . b_k,h, the last term
      the same for every image token, so the softmax over them drops it
    - token->image output: P_h (X W_v,h^T + b_v,h) = (P_h X) W_v,h^T + b_v,h (each row of P_h sums to 1)
    - image->token scores: (W_q,h x + b_q,h) . k_h = x . (W_q,h^T k_h) + b_q,h . k_h
    - image->token output: sum_h P_h v_h W_o,h^T + b_o, each head's values through its slice of W_o first

    so every product with the image tokens has H * T columns instead of D: for
    MobileSAM's decoder and one point (H 8, T 7, D 128) 56, and a prompt costs
    about 0.4 GMAC in the transformer instead of 0.9. Blocks use it only where
    H * T < D. The same mathematics summed in another order: logits agree with
    the written-out products to fp32 rounding (about 1e-6), so only backends
    whose names say they are not the reference numerics use it. This thread only.
    """
    token = _FACTORED.set(True)
    try:
        yield
    finally:
        _FACTORED.reset(token)


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
        return self.attend(self.q_proj(q), self.k_proj(k), self.v_proj(v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention over already projected (B, N, internal_dim) queries, keys and values."""
        if _FUSED.get():
            b, n, _ = q.shape
            if k.shape[0] == v.shape[0] == 1 < b:
                # Keys and values shared by the batch: all B * Nq queries as one, so the kernel reads them in place.
                q = q.reshape(1, b * n, -1)
            batch = max(q.shape[0], k.shape[0])  # image tokens shared by a batch of prompts: expanded views
            q, k, v = (self._split_heads(x).expand(batch, -1, -1, -1) for x in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v)  # (B or 1, heads, B * Nq / that, hd)
            return self.out_proj(out.transpose(1, 2).reshape(b, n, self.internal_dim))
        # Only for batches: with one prompt, the head-major views need no copy
        # and stay on the kernels the reference uses.
        if q.shape[0] > 1 and k.shape[1] > q.shape[1]:
            return self.out_proj(self._attend_per_head(q, k, v))
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        attn = (q @ k.permute(0, 1, 3, 2)).div_(math.sqrt(q.shape[-1]))  # (B, heads, Nq, Nk)
        out = torch.softmax(attn, dim=-1) @ v
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.internal_dim))

    def factors_pay(self, tokens: int) -> bool:
        """Whether `factored_attention` makes this attention cheaper for `tokens` prompt tokens."""
        return self.num_heads * tokens < self.internal_dim

    def attend_to_image(self, q: torch.Tensor, image_tokens: torch.Tensor, pe_keys: torch.Tensor) -> torch.Tensor:
        """`self(q, image_tokens + pe, image_tokens)` factored (`factored_attention`): (B, T, C) tokens over (B or 1, HW, C) image tokens.

        `pe_keys`: (D, HW), `k_proj`'s weight times the image tokens' positional encoding
        (`ImageTokens.pe_product`), so that the keys' sum with it is never made.
        """
        heads, head_dim = self.num_heads, self.internal_dim // self.num_heads
        queries = self.q_proj(q)
        b, t, _ = queries.shape
        c, n = image_tokens.shape[-1], image_tokens.shape[1]
        # Scaled before the products, so the (B, H*T, HW) scores are never divided: the same bits
        # where the head width is a power of 4 (MobileSAM's 16), else within rounding.
        per_head = queries.view(b, t, heads, head_dim).transpose(1, 2) / math.sqrt(head_dim)  # (B, H, T, d)
        reach = (per_head @ self.k_proj.weight.view(heads, head_dim, c)).reshape(b, heads * t, c)
        # k_proj's bias adds q_h . b_k,h to all of a row's scores: the softmax over the row cancels it.
        scores = _per_head_product(per_head, pe_keys.view(heads, head_dim, n)).view(b, heads * t, n)
        scores = _add_with_image(scores, reach, image_tokens.transpose(1, 2))  # (B, H*T, HW)
        mixed = _with_image(torch.softmax(scores, dim=-1), image_tokens).view(b, heads, t, c)  # (B, H, T, C)
        value_weight = self.v_proj.weight.view(heads, head_dim, c).transpose(1, 2)  # (H, C, d)
        out = torch.baddbmm(
            self.v_proj.bias.view(heads, 1, head_dim), mixed.transpose(0, 1).reshape(heads, b * t, c), value_weight
        )
        return self.out_proj(out.view(heads, b, t, head_dim).permute(1, 2, 0, 3).reshape(b, t, self.internal_dim))

    def attend_from_image(
        self,
        image_queries: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        residual: torch.Tensor,
        *,
        pe_queries: torch.Tensor | None = None,
        overwrite_residual: bool = False,
    ) -> torch.Tensor:
        """`residual + self(image_queries, k, v)` factored (`factored_attention`): (B or 1, HW, C) image tokens over (B, T, C) tokens.

        Args:
            image_queries: `q_proj`'s output already, (B or 1, HW, D); or, with `pe_queries`,
                the image tokens themselves, whose sum with their positional encoding
                is the attention's input.
            pe_queries: (D, HW), `q_proj`'s weight times that positional encoding
                (`ImageTokens.pe_product`).
            overwrite_residual: The sum may be written into `residual` (B, HW, C), which
                the caller no longer needs.
        """
        heads, head_dim = self.num_heads, self.internal_dim // self.num_heads
        keys = self.k_proj(k)
        b, t, _ = keys.shape
        per_head = keys.view(b, t, heads, head_dim).transpose(1, 2) / math.sqrt(head_dim)  # (B, H, T, d), as in attend_to_image
        n = image_queries.shape[1]
        # Scores lie (B, H, T, HW): the softmax over each head's T tokens then runs along whole rows of image tokens.
        if pe_queries is None:
            # Each head's keys in its own columns of a block-diagonal (B, H*T, D): one product with the shared queries.
            blocks = per_head.new_zeros(b, heads, t, heads, head_dim)
            blocks.diagonal(dim1=1, dim2=3).copy_(per_head.permute(0, 2, 3, 1))
            scores = _with_image(blocks.view(b, heads * t, -1), image_queries.transpose(1, 2)).view(b, heads, t, n)
        else:
            c = image_queries.shape[-1]
            reach = (per_head @ self.q_proj.weight.view(heads, head_dim, c)).reshape(b, heads * t, c)  # (B, H*T, C)
            offset = per_head @ self.q_proj.bias.view(heads, head_dim, 1)  # (B, H, T, 1)
            scores = _per_head_product(per_head, pe_queries.view(heads, head_dim, n), offset).view(b, heads * t, n)
            scores = _add_with_image(scores, reach, image_queries.transpose(1, 2)).view(b, heads, t, n)
        probs = torch.softmax(scores, dim=2).view(b, heads * t, n)
        values = self.v_proj(v).view(b, t, heads, head_dim)
        out_weight = self.out_proj.weight.view(-1, heads, head_dim)  # (C, H, d)
        lifted = torch.einsum("bthd,chd->bhtc", values, out_weight).reshape(b, heads * t, -1)  # (B, H*T, C)
        # Each image token's probabilities sum to 1 per head, H over all rows: the bias rides in with the product.
        lifted = lifted + self.out_proj.bias / heads
        if residual.shape[0] != b:
            # Image tokens shared by the batch: the residual is copied out to every prompt and the product
            # accumulated onto it, which costs less than adding it to the product (in bf16, several times less).
            return residual.expand(b, -1, -1).clone().baddbmm_(probs.transpose(1, 2), lifted)
        if overwrite_residual:
            return residual.baddbmm_(probs.transpose(1, 2), lifted)
        return torch.baddbmm(residual, probs.transpose(1, 2), lifted)

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
                attn = (q[..., heads].reshape(b * n, head_dim) @ k[0, :, heads].T).view(b, n, -1).div_(scale)
                probs = torch.softmax(attn, dim=-1)
                outputs.append((probs.view(b * n, -1) @ v[0, :, heads]).view(b, n, head_dim))
            else:
                attn = torch.bmm(q[..., heads], k[..., heads].transpose(1, 2)).div_(scale)  # (B, Nq, Nk)
                outputs.append(torch.bmm(torch.softmax(attn, dim=-1), v[..., heads]))  # (B, Nq, head_dim)
        return torch.cat(outputs, dim=-1)


def _per_head_product(per_head: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, T, N): each head's (T, d) rows of `per_head` times that head's (d, N) `weight`, plus `bias` (B, H, T, 1).

    One prompt at a time, written in place: batched over B and H at once,
    `weight` would first be copied out to every prompt.
    """
    b, heads, t, _ = per_head.shape
    out = per_head.new_empty((b, heads, t, weight.shape[-1]))
    for i in range(b):
        if bias is None:
            torch.bmm(per_head[i], weight, out=out[i])
        else:
            torch.baddbmm(bias[i], per_head[i], weight, out=out[i])
    return out


def _add_with_image(out: torch.Tensor, prompt_side: torch.Tensor, image_side: torch.Tensor) -> torch.Tensor:
    """`out += prompt_side @ image_side`, `_with_image`'s product added in place into (B, M, N) `out`."""
    if image_side.shape[0] == 1 and prompt_side.shape[0] > 1:
        b, m, k = prompt_side.shape
        out.view(b * m, -1).addmm_(prompt_side.reshape(b * m, k), image_side[0])
        return out
    return out.baddbmm_(prompt_side, image_side.expand(prompt_side.shape[0], -1, -1))


def _with_image(prompt_side: torch.Tensor, image_side: torch.Tensor) -> torch.Tensor:
    """(B, M, K) @ (B or 1, K, N): one product when the image side is shared by the batch."""
    if image_side.shape[0] == 1 and prompt_side.shape[0] > 1:
        b, m, k = prompt_side.shape
        return (prompt_side.reshape(b * m, k) @ image_side[0]).view(b, m, -1)
    return torch.bmm(prompt_side, image_side.expand(prompt_side.shape[0], -1, -1))


class ImageProjections(NamedTuple):
    """A block's work on the image tokens that does not depend on the prompts: (B, HW, C/r) each."""

    keys: torch.Tensor  # token->image attention keys
    values: torch.Tensor  # token->image attention values
    queries: torch.Tensor  # image->token attention queries


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

    def project_image(self, keys: torch.Tensor, key_pe: torch.Tensor) -> ImageProjections:
        """Both cross-attentions' projections of the image tokens `keys` (B, HW, C)."""
        k = keys + key_pe
        return ImageProjections(
            self.cross_attn_token_to_image.k_proj(k),
            self.cross_attn_token_to_image.v_proj(keys),
            self.cross_attn_image_to_token.q_proj(k),
        )

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        image_projections: ImageProjections | None = None,
        pe_product: Callable[[torch.Tensor], torch.Tensor] | None = None,
        overwrite_keys: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One block.

        Args:
            image_projections: `project_image` of these keys, when already made.
            pe_product: `ImageTokens.pe_product` of `key_pe`, kept across calls; made here when None.
            overwrite_keys: The block may write its new keys into `keys` (without gradients only).
        """
        token_to_image, image_to_token = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        factored = _FACTORED.get() and token_to_image.factors_pay(queries.shape[1])
        if image_projections is None and not factored:
            image_projections = self.project_image(keys, key_pe)
        if pe_product is None:
            pe_product = partial(_pe_product, key_pe)
        if self.skip_first_layer_pe:
            # The first layer's queries are the prompt embeddings themselves, PE included.
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        if image_projections is None:
            attended = token_to_image.attend_to_image(queries + query_pe, keys, pe_product(token_to_image.k_proj.weight))
        else:
            attended = token_to_image.attend(
                token_to_image.q_proj(queries + query_pe), image_projections.keys, image_projections.values
            )
        queries = self.norm2(queries + attended)

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        if not factored:
            attended = image_to_token.attend(image_projections.queries, image_to_token.k_proj(q), image_to_token.v_proj(queries))
            # Added into the fresh attention output: no (B, HW, C) buffer of its own.
            return queries, self.norm4(attended.add_(keys))
        if image_projections is not None:
            return queries, self.norm4(image_to_token.attend_from_image(image_projections.queries, q, queries, keys))
        attended = image_to_token.attend_from_image(
            keys,
            q,
            queries,
            keys,
            pe_queries=pe_product(image_to_token.q_proj.weight),
            overwrite_residual=overwrite_keys and not torch.is_grad_enabled(),
        )
        return queries, self.norm4(attended)


def _pe_product(pe: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(D, HW): `weight` (D, C) times the (1, HW, C) positional encoding `pe`."""
    return weight @ pe[0].T


@dataclass(frozen=True)
class ImageTokens:
    """The image side of the transformer before any prompt is seen.

    Segment everything decodes a thousand prompts on one image embedding; the
    first layer's projections of it are computed once, here, instead of once
    per batch.
    """

    tokens: torch.Tensor  # (B, HW, C), B = 1 when every prompt shares them
    pe: torch.Tensor  # (1, HW, C) positional encoding
    first_layer: ImageProjections
    size: tuple[int, int]  # (H, W) of the token grid
    _pe_products: dict[int, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    def pe_product(self, weight: torch.Tensor) -> torch.Tensor:
        """(D, HW): `weight` (D, C) times the positional encoding, made once per image and weight.

        `factored_attention` takes a projection of image tokens plus encoding as
        the projection of each, so the sum is never made for every prompt.
        """
        product = self._pe_products.get(id(weight))
        if product is None:
            product = self._pe_products[id(weight)] = _pe_product(self.pe, weight)
        return product


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

    def prepare_image(self, image_embedding: torch.Tensor, image_pe: torch.Tensor) -> ImageTokens:
        """The prompt-independent start of the transformer, to reuse for any number of prompts.

        Args:
            image_embedding: (B, C, H, W), or (1, C, H, W) shared by all prompts:
                the first layer then works on one copy, and broadcasting gives
                every prompt its own image tokens from there on.
            image_pe: (1, C, H, W) positional encoding of the image tokens.
        """
        _, _, h, w = image_embedding.shape
        # The first layer's projections read the channel-major view, as the
        # reference does; a contiguous copy would round differently there.
        channel_major = image_embedding.flatten(2).transpose(1, 2)  # (B, HW, C)
        # The positional encoding and the residual are copied token-major once,
        # so that every add of them streams through memory.
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        return ImageTokens(
            tokens=channel_major.contiguous(),
            pe=key_pe,
            first_layer=self.layers[0].project_image(channel_major, key_pe),
            size=(h, w),
        )

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the transformer on B prompts; see `prepare_image` and `decode`."""
        return self.decode(self.prepare_image(image_embedding, image_pe), point_embedding)

    def decode(self, image: ImageTokens, point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the transformer from `prepare_image`'s output.

        Args:
            image: The prepared image tokens, shared by the B prompts or one per prompt.
            point_embedding: (B, N, C) output and prompt tokens.

        Returns:
            The processed tokens (B, N, C) and image tokens (B, H*W, C).
        """
        queries, keys, key_pe = point_embedding, image.tokens, image.pe
        for index, layer in enumerate(self.layers):
            queries, keys = layer(
                queries,
                keys,
                query_pe=point_embedding,
                key_pe=key_pe,
                image_projections=image.first_layer if index == 0 else None,
                pe_product=image.pe_product,
                # The first block's keys are the image's own tokens; later ones, the block before's fresh output.
                overwrite_keys=index > 0,
            )
        q = queries + point_embedding
        final = self.final_attn_token_to_image
        if _FACTORED.get() and final.factors_pay(q.shape[1]):
            queries = self.norm_final_attn(queries + final.attend_to_image(q, keys, image.pe_product(final.k_proj.weight)))
        else:
            queries = self.norm_final_attn(queries + final(q=q, k=keys + key_pe, v=keys))
        return queries, keys
