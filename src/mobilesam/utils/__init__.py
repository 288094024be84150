"""`segment_anything.utils`'s module names (`transforms`, `amg`, `onnx`), each a thin alias of ours.

Kept empty so that importing one of them loads only what it needs.
"""
