"""The shipped training task: a small CNN that tells low-dose from standard-dose CT slices.

The label of a series comes from its de-identified header (CTDIvol below
4 mGy is the low-dose arm of the LOCAT-like demo); the input is a few 2-D
slices from the middle of the volume, read lazily from the Zarr store and
windowed to soft tissue. Low dose means more noise, so the task is learnable
from texture alone, at every site, and the same code trains federated
(through :mod:`insitu.federation.train_app`), pooled or on one site.

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

CTDI_TAG = "00189345"
LOW_DOSE_BELOW_MGY = 4.0
WINDOW = (-160.0, 240.0)  # soft-tissue window, HU


@dataclass
class SliceSet:
    """Slices (n, 1, y, x) float32 with labels (n,) and the subject of each slice."""

    x: np.ndarray
    y: np.ndarray
    subjects: list[str]

    def __len__(self) -> int:
        return len(self.y)


def _label(header: dict[str, Any]) -> int | None:
    entry = header.get(CTDI_TAG, {})
    values = entry.get("Value") if isinstance(entry, dict) else None
    if not values:
        return None
    return 1 if float(values[0]) < LOW_DOSE_BELOW_MGY else 0


def load_slices(data: Any, slices_per_subject: int = 4) -> SliceSet:
    """Middle slices of each subject's first series, from a SiteData or a Dataset."""
    series = data.series.sort_values("series_id").drop_duplicates("subject_id")
    xs, ys, who = [], [], []
    for row in series.itertuples():
        label = _label(data.header(str(row.series_id)))
        if label is None:
            continue
        image = data.image(str(row.series_id))
        depth = int(image.shape[0])
        first = max(0, depth // 2 - slices_per_subject // 2)
        block = np.asarray(image[first : first + slices_per_subject].values, dtype=np.float32)
        lo, hi = WINDOW
        block = (np.clip(block, lo, hi) - lo) / (hi - lo)
        for plane in block:
            xs.append(plane[None])
            ys.append(label)
            who.append(str(row.subject_id))
    if not xs:
        return SliceSet(np.zeros((0, 1, 1, 1), np.float32), np.zeros(0, np.int64), [])
    return SliceSet(np.stack(xs).astype(np.float32), np.asarray(ys, dtype=np.int64), who)


def make_model() -> Any:
    """Two conv blocks and a linear head; ~1.3 k parameters, any input size."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 2),
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
    optimiser = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
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
