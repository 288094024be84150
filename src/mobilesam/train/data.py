"""Deterministic, resumable batches: which items each rank sees at each micro-batch.

Epoch `e` visits the items in the order `randperm(n, seed + e)`; micro-batch
`k` of the epoch is the slice `[k * G, (k + 1) * G)` of that order, with
G = batch size x world size, and rank `r` takes its `r`-th part. The data
position is one number, the count of micro-batches consumed, so a resumed
run sees exactly the batches the interrupted one would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler


@dataclass(frozen=True)
class BatchPlan:
    """The global order of micro-batches.

    Attributes:
        num_items: Items in the dataset.
        batch_size: Items per micro-batch and rank.
        world_size: Ranks.
        seed: Seed of every epoch's permutation (plus the epoch number).
    """

    num_items: int
    batch_size: int
    world_size: int
    seed: int

    def __post_init__(self) -> None:
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"{self.num_items} items cannot fill one batch of {self.batch_size} x {self.world_size} processes; "
                "lower --batch-size or add images"
            )

    @property
    def batches_per_epoch(self) -> int:
        """Full micro-batches per epoch (the remainder of each epoch's order is skipped)."""
        return self.num_items // (self.batch_size * self.world_size)

    def position(self, micro_batch: int) -> tuple[int, int]:
        """(epoch, micro-batch index within the epoch) of a global micro-batch count."""
        return divmod(micro_batch, self.batches_per_epoch)

    def indices(self, micro_batch: int, rank: int) -> list[int]:
        """The item indices rank `rank` trains on in global micro-batch `micro_batch`."""
        epoch, k = self.position(micro_batch)
        order = torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.seed + epoch))
        start = (k * self.world_size + rank) * self.batch_size
        return order[start : start + self.batch_size].tolist()


class PlanSampler(Sampler[list[tuple[int, int]]]):
    """A batch sampler for `DataLoader` that yields this rank's micro-batches `[first, last)` of a plan.

    Each element is `(item index, micro-batch number)`: datasets that draw
    random prompts seed them with both, so a resumed run draws the same ones.
    """

    def __init__(self, plan: BatchPlan, rank: int, first: int, last: int) -> None:
        self.plan, self.rank, self.first, self.last = plan, rank, first, last

    def __len__(self) -> int:
        return max(0, self.last - self.first)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for micro_batch in range(self.first, self.last):
            yield [(index, micro_batch) for index in self.plan.indices(micro_batch, self.rank)]


def collate_list(items: list) -> list:
    """Keep a batch as a list: images of different shapes are padded later by `Sam.preprocess`."""
    return items
