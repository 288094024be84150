"""Training: distil a TinyViT encoder from a SAM teacher, fine-tune the decoder.

`cache_teacher` runs the teacher once per image and stores its embeddings;
`distill` trains the student encoder on them (MSE) and writes a
`mobile_sam.pt`-layout checkpoint; `finetune_decoder` trains the prompt
encoder and mask decoder with SAM's prompt simulation and loss. All three
run the same under `torchrun --nproc_per_node N`; see docs/training.md.
"""

from .cache import CacheSummary, TeacherCache, cache_teacher
from .config import CacheConfig, ConfigError, DistillConfig, FinetuneConfig, load_config
from .distill import distill
from .finetune import finetune_decoder
from .loop import TrainSummary

__all__ = [
    "CacheConfig",
    "CacheSummary",
    "ConfigError",
    "DistillConfig",
    "FinetuneConfig",
    "TeacherCache",
    "TrainSummary",
    "cache_teacher",
    "distill",
    "finetune_decoder",
    "load_config",
]
