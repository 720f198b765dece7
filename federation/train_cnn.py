"""The shipped training task: a small CNN that tells upper from lower abdominal CT slices.

Each subject's first series gives a few slices from its upper and lower half
(labels come from the slice position, so every site can train without any
annotation), read lazily from the Zarr store and windowed to soft tissue.
Liver, spleen and kidneys against bowel and appendix: learnable from anatomy
at every site, and the same code trains federated (through
:mod:`insitu.federation.train_app`), pooled or on one site.

torch is an optional extra (``pip install insitu[torch]``): this module
imports it inside functions, and analytics never imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "SliceSet",
    "evaluate",
    "get_weights",
    "load_slices",
    "make_model",
    "set_weights",
    "train_epochs",
]

WINDOW = (-160.0, 240.0)  # soft-tissue window, HU


@dataclass
class SliceSet:
    """Slices (n, 1, y, x) float32 with labels (n,) and the subject of each slice."""

    x: np.ndarray
    y: np.ndarray
    subjects: list[str]

    def __len__(self) -> int:
        return len(self.y)


def load_slices(data: Any, slices_per_subject: int = 8) -> SliceSet:
    """Slices of each subject's first series, labelled upper (1) or lower (0) half.

    From a SiteData or a Dataset; slices are windowed to soft tissue and scaled to
    [0, 1]; the two slices either side of the middle are left out (ambiguous).
    """
    series = data.series.sort_values("series_id").drop_duplicates("subject_id")
    xs, ys, who = [], [], []
    lo, hi = WINDOW
    for row in series.itertuples():
        image = data.image(str(row.series_id))
        depth = int(image.shape[0])
        half = depth // 2
        upper = np.linspace(0, max(half - 2, 0), slices_per_subject // 2).round().astype(int)
        lower = np.linspace(min(half + 1, depth - 1), depth - 1, slices_per_subject // 2)
        picks = sorted({*upper.tolist(), *lower.round().astype(int).tolist()})
        block = np.asarray(image.values[picks], dtype=np.float32)
        block = (np.clip(block, lo, hi) - lo) / (hi - lo)
        for index, plane in zip(picks, block, strict=True):
            xs.append(plane[None])
            ys.append(1 if index < half else 0)
            who.append(str(row.subject_id))
    if not xs:
        return SliceSet(np.zeros((0, 1, 1, 1), np.float32), np.zeros(0, np.int64), [])
    return SliceSet(np.stack(xs).astype(np.float32), np.asarray(ys, dtype=np.int64), who)


def make_model() -> Any:
    """Two conv blocks and a linear head on a 4x4 layout; ~1.8 k parameters, any input size."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),  # keep a coarse layout: where the organs are
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 2),
    )


def get_weights(model: Any) -> list[np.ndarray]:
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_weights(model: Any, weights: Sequence[np.ndarray]) -> None:
    import torch

    keys = list(model.state_dict().keys())
    model.load_state_dict(
        {k: torch.from_numpy(np.asarray(w)) for k, w in zip(keys, weights, strict=True)}
    )


def train_epochs(
    model: Any,
    data: SliceSet,
    *,
    epochs: int = 1,
    lr: float = 0.01,
    batch_size: int = 16,
    proximal_mu: float = 0.0,
    seed: int = 0,
) -> float:
    """Local SGD (FedProx when ``proximal_mu`` > 0); returns the mean training loss."""
    import torch
    from torch import nn

    if len(data) == 0:
        return float("nan")
    torch.manual_seed(seed)
    global_params = [p.detach().clone() for p in model.parameters()]
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.from_numpy(data.x)
    y = torch.from_numpy(data.y)
    model.train()
    total, count = 0.0, 0
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            optimiser.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            if proximal_mu > 0:
                prox = sum(
                    ((p - g) ** 2).sum()
                    for p, g in zip(model.parameters(), global_params, strict=True)
                )
                loss = loss + proximal_mu / 2 * prox
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
    return total / max(count, 1)


def evaluate(model: Any, data: SliceSet) -> tuple[float, float]:
    """(mean loss, accuracy) on a slice set."""
    import torch
    from torch import nn

    if len(data) == 0:
        return float("nan"), float("nan")
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(data.x))
        y = torch.from_numpy(data.y)
        loss = float(nn.CrossEntropyLoss()(logits, y))
        accuracy = float((logits.argmax(1) == y).float().mean())
    return loss, accuracy
