"""Composer-balanced sampling of training rows."""

from __future__ import annotations

import torch


class ComposerBalancedSampler(torch.utils.data.Sampler):
    """Each epoch, len(rows) row indices drawn with replacement, every composer equally likely (a row
    weighs 1 / its composer's rows), then grouped by length as the Trainer's LengthGroupedSampler
    does: mega-batches of 50 batches, each sorted longest first, so batches stay nearly unpadded.
    Seeded by `seed` and the epoch (`set_epoch`, which the Trainer and accelerate call)."""

    MEGA_BATCHES = 50  # LengthGroupedSampler's mega-batch, in batches

    def __init__(self, composers: list[int], lengths: list[int], batch_size: int, seed: int):
        counts = torch.bincount(torch.tensor(composers))
        self.weights = 1.0 / counts[torch.tensor(composers)].double()
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, len(self.lengths), replacement=True, generator=generator).tolist()
        mega = self.batch_size * self.MEGA_BATCHES
        for start in range(0, len(drawn), mega):
            yield from sorted(drawn[start : start + mega], key=lambda i: -self.lengths[i])
