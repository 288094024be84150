"""Masks in Label Studio's brush RLE: the format its `BrushLabels` regions carry in `value.rle`.

The format is thi.ng's `rle-pack`, which Label Studio's editor decodes (and
`label_studio_sdk.converter.brush.decode_rle` in Python): a bit stream, packed
into bytes most significant bit first, of

- a header: the number of values (32 bits), the word size minus one (5 bits),
  and four run-length field widths, each minus one (4 bits each);
- then chunks: a flag bit (1: a run of one repeated word), a 2-bit index into
  the field widths, the chunk length minus one in that many bits, and the word.

The values are the mask's RGBA pixels, row-major: 255 in all four channels
inside the mask, 0 outside (the editor reads the alpha channel).
"""

from __future__ import annotations

import numpy as np

# Bits of a chunk's length-1 field for each 2-bit width index; the widths Label Studio's own tools write.
_LENGTH_BITS = np.array([3, 4, 8, 16])
_MAX_CHUNK = 2**16  # the longest chunk the 16-bit field holds
_WORD_BITS = 8
_CHANNELS = 4  # RGBA


def encode_brush_rle(mask: np.ndarray) -> list[int]:
    """An (H, W) mask as Label Studio's brush RLE bytes.

    Args:
        mask: (H, W) bool (or 0/1) mask.

    Returns:
        The bytes of the bit stream, as the list of ints Label Studio's `rle` field holds.

    Raises:
        ValueError: The mask is not 2-D, or has too many pixels for the format's 32-bit count.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    count = _CHANNELS * mask.size
    if count >= 2**32:
        raise ValueError(f"a {mask.shape[1]}x{mask.shape[0]} mask is too large for brush RLE (under 2**30 pixels)")
    header = f"{count:032b}{_WORD_BITS - 1:05b}" + "".join(f"{bits - 1:04b}" for bits in _LENGTH_BITS)
    header_bits = np.frombuffer(header.encode(), dtype=np.uint8) - ord("0")
    if count == 0:
        return np.packbits(header_bits).tolist()
    inside = mask.reshape(-1).astype(bool)
    # Runs of equal pixels; each pixel is four equal values, so a run holds 4x its pixels.
    starts = np.concatenate(([0], np.flatnonzero(inside[1:] != inside[:-1]) + 1))
    lengths = np.diff(np.append(starts, inside.size)) * _CHANNELS
    words = np.where(inside[starts], 255, 0)
    # Runs longer than the widest field are cut into chunks of at most _MAX_CHUNK values.
    pieces = -(-lengths // _MAX_CHUNK)
    run = np.repeat(np.arange(len(lengths)), pieces)
    piece = np.arange(len(run)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    chunk = np.minimum(lengths[run] - piece * _MAX_CHUNK, _MAX_CHUNK)
    width_index = np.searchsorted(2**_LENGTH_BITS, chunk)  # the narrowest field that holds chunk - 1
    length_bits = _LENGTH_BITS[width_index]
    codes = (((4 | width_index) << length_bits | (chunk - 1)) << _WORD_BITS) | words[run]  # flag 1, index, length, word
    code_bits = 3 + length_bits + _WORD_BITS  # at most 27
    # Each code left-aligned in 32 bits, unpacked, and its own bits kept: the stream in order.
    aligned = (codes.astype(np.uint64) << (32 - code_bits).astype(np.uint64)).astype(">u4")
    bits = np.unpackbits(aligned.view(np.uint8).reshape(-1, 4), axis=1)  # (chunks, 32)
    stream = bits[np.arange(32) < code_bits[:, None]]
    return np.packbits(np.concatenate((header_bits, stream))).tolist()
