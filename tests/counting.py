"""Counting a predictor's encoder runs, for the tests of what skips the encoder (stores, tiles)."""

from __future__ import annotations

from mobilesam.predictor import SamPredictor


def counting(predictor: SamPredictor) -> SamPredictor:
    """`predictor`, its encoder runs counted in `predictor.encoder_calls`."""
    predictor.encoder_calls = 0
    embed = predictor.backend.embed

    def counted(*args, **kwargs):
        predictor.encoder_calls += 1
        return embed(*args, **kwargs)

    predictor.backend.embed = counted
    return predictor
