"""Token streams cut into fixed-length training windows, with a held-out tail for validation."""
from __future__ import annotations

import torch


class TokenStream:
    """A corpus as one long tensor of ids, split into train (first 90%) and validation (last 10%)."""

    def __init__(self, ids, seq_len: int, val_fraction: float = 0.1):
        ids = torch.as_tensor(ids, dtype=torch.long)
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction={val_fraction} must lie in (0, 1)")
        if seq_len < 1:
            raise ValueError(f"seq_len={seq_len} must be >= 1")
        split = int(len(ids) * (1 - val_fraction))
        self.train, self.val, self.seq_len = ids[:split], ids[split:], seq_len
        for name, part in (("train", self.train), ("validation", self.val)):
            if len(part) < seq_len + 1:
                raise ValueError(
                    f"the corpus is too short: its {name} part has {len(part)} tokens, fewer than "
                    f"seq_len + 1 = {seq_len + 1}; use a longer corpus or a shorter seq_len"
                )

    def batch(self, batch_size: int, split: str = "train", generator=None) -> torch.Tensor:
        """batch_size random windows of seq_len tokens (B, T), from the global RNG unless a generator is given."""
        data = self._split(split)
        starts = torch.randint(0, len(data) - self.seq_len, (batch_size,), generator=generator)
        return torch.stack([data[s : s + self.seq_len] for s in starts.tolist()])

    def windows(self, split: str = "val", max_windows: int | None = None) -> torch.Tensor:
        """The split cut into consecutive non-overlapping windows (N, T): a fixed evaluation set."""
        data = self._split(split)
        count = len(data) // self.seq_len if max_windows is None else min(max_windows, len(data) // self.seq_len)
        return data[: count * self.seq_len].view(count, self.seq_len)

    def _split(self, split: str) -> torch.Tensor:
        if split not in ("train", "val"):
            raise ValueError(f"split={split!r}: allowed values are 'train' and 'val'")
        return self.train if split == "train" else self.val
