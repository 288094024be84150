"""`segment_anything.utils.onnx`'s `SamOnnxModel`, exporting our model: the wrapper of `mobilesam.export`.

`SamOnnxModel(model, return_single_mask, use_stability_score=False,
return_extra_metrics=False)` takes SAM's constructor arguments and SAM's six
decoder inputs, so SAM's export script and notebook code run with it; it calls
our model's own prompt encoder, mask decoder and mask post-processing.
"""

from ..export.wrappers import SamOnnxModel

__all__ = ["SamOnnxModel"]
