"""``crnn``: a convolutional recurrent network for short strings (licence plates, meters).

Shi, Bai and Yao, "An End-to-End Trainable Neural Network for Image-based Sequence
Recognition and Its Application to Scene Text Recognition", TPAMI 2017, at a size that
trains on two CPU cores: a few 3x3 convolutions with max-pooling (every block halves the
height, the first ``width_pools`` also halve the width), each image column of the last
feature map a time step, a bidirectional GRU (or LSTM) over the columns, and one linear
layer to the charset plus the CTC blank (output 0). The model returns N x T x K logits,
batch first; the sequence task applies CTC to them.

The recurrent layers are written out from ``nn.Linear`` (the input projection over all
time steps at once, the hidden projection once per step) with ``torch.nn.GRU``'s and
``torch.nn.LSTM``'s equations and gate order, rather than taken from those modules: the
same code then trains with DP-SGD (Opacus computes per-sample gradients of linear layers
used at every step, and has none for ``nn.GRU``), exports to ONNX as plain matrix
products, and runs the same on every site. GroupNorm (no running statistics) after every
convolution but the first keeps the network averageable and DP-trainable and gets CTC off
its all-blank plateau within an epoch or two (without it, training stalls there for many);
the first block, at full resolution, would triple the cost on a CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

CELLS = ("gru", "lstm")
NORMS = ("group", "none")


class Direction(nn.Module):
    """One direction of a single-layer GRU or LSTM over (N, T, F) inputs, batch first."""

    def __init__(self, cell: str, inputs: int, hidden: int, reverse: bool) -> None:
        super().__init__()
        gates = 3 if cell == "gru" else 4
        self.cell = cell
        self.hidden = hidden
        self.reverse = reverse
        self.ih = nn.Linear(inputs, gates * hidden)
        self.hh = nn.Linear(hidden, gates * hidden)
        bound = hidden**-0.5  # torch.nn.GRU / LSTM's initialisation
        for param in self.parameters():
            nn.init.uniform_(param, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        n, steps, _ = x.shape
        projected = self.ih(x)  # every step's input projection in one product
        h = x.new_zeros(n, self.hidden)
        c = x.new_zeros(n, self.hidden)
        out: list[Tensor] = [h] * steps
        order = range(steps - 1, -1, -1) if self.reverse else range(steps)
        for t in order:
            if self.cell == "gru":
                h = self._gru(projected[:, t], h)
            else:
                h, c = self._lstm(projected[:, t], h, c)
            out[t] = h
        return torch.stack(out, dim=1)

    def _gru(self, xi: Tensor, h: Tensor) -> Tensor:
        hh = self.hh(h)
        xr, xz, xn = xi.chunk(3, dim=1)
        hr, hz, hn = hh.chunk(3, dim=1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        cand = torch.tanh(xn + r * hn)
        return (1 - z) * cand + z * h

    def _lstm(self, xi: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        i, f, g, o = (xi + self.hh(h)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class BiRNN(nn.Module):
    def __init__(self, cell: str, inputs: int, hidden: int) -> None:
        super().__init__()
        self.forward_dir = Direction(cell, inputs, hidden, reverse=False)
        self.backward_dir = Direction(cell, inputs, hidden, reverse=True)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.forward_dir(x), self.backward_dir(x)], dim=2)


def _groupnorm(channels: int) -> nn.GroupNorm:
    groups = min(8, channels)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


class CRNN(nn.Module):
    flsilo_head = "fc"

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        channels: tuple[int, ...],
        hidden: int,
        cell: str,
        norm: str,
        width_pools: int,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for i, out in enumerate(channels):
            pool = (2 if h > 1 else 1, 2 if i < width_pools and w > 1 else 1)
            layers += [nn.Conv2d(c, out, kernel_size=3, padding=1)]
            layers += [_groupnorm(out)] if norm == "group" and i > 0 else []
            layers += [nn.ReLU(), nn.MaxPool2d(pool, ceil_mode=True)]
            c, h, w = out, (h + pool[0] - 1) // pool[0], (w + pool[1] - 1) // pool[1]
        self.features = nn.Sequential(*layers)
        self.time_steps = w
        self.rnn = BiRNN(cell, c * h, hidden)
        self.fc = nn.Linear(2 * hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        f = self.features(x)  # N x C x H x T
        n, c, h, t = f.shape
        columns = f.permute(0, 3, 1, 2).reshape(n, t, c * h)
        return self.fc(self.rnn(columns))  # N x T x K


def build(
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: int | tuple[int, ...] = (16, 32, 48),
    hidden: int = 64,
    cell: str = "gru",
    norm: str = "group",
    width_pools: int = 2,
) -> nn.Module:
    """``num_classes`` counts the CTC blank: the charset's length plus one."""
    if len(input_shape) != 3:
        raise ValueError("crnn needs an image input shape C,H,W")
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, not {cell!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {norm!r}")
    if isinstance(channels, int):
        channels = (channels,)
    if not channels or min(channels) < 1 or hidden < 1:
        raise ValueError("channels and hidden must be positive")
    if not 0 <= width_pools <= len(channels):
        raise ValueError(f"width_pools must be between 0 and {len(channels)}")
    if num_classes < 2:
        raise ValueError("crnn needs the blank and at least one character")
    c, h, w = (int(v) for v in input_shape)
    return CRNN((c, h, w), num_classes, tuple(channels), hidden, cell, norm, width_pools)
