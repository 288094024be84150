"""What the export tests share: one export's predictor run beside eager torch on the protocol's prompts."""

from __future__ import annotations

import numpy as np

from mobilesam.fidelity import Agreement, compare_masks, demo_prompts


def agreement_with_torch(expected, measured, tolerance: float) -> Agreement:
    """Masks of `measured` (an `OnnxPredictor`) against `expected` (`SamPredictor`), both holding one image.

    The demo prompts, then a box and a click with the last best mask as mask_input
    (has_mask_input = 1). Scores and logits of the demo prompts must agree within
    `tolerance`; the masks' agreement is returned for the caller's bar.
    """
    want, got = [], []
    for prompt in demo_prompts(*expected.original_size):
        masks, scores, logits = expected.predict(**prompt)
        ours = measured.predict(**prompt)
        assert np.abs(ours[1] - scores).max() <= tolerance and np.abs(ours[2] - logits).max() <= tolerance
        want.append(masks)
        got.append(ours[0])
    prompt = {
        **demo_prompts(*expected.original_size)[3],
        "mask_input": logits[np.argmax(scores)][None],
        "multimask_output": False,
    }
    want.append(expected.predict(**prompt)[0])
    got.append(measured.predict(**prompt)[0])
    return compare_masks(want, got)
