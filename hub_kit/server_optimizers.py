"""Server optimizers (FedAvgM, FedAdam, FedYogi): pure update rules on a pseudo-gradient.

The hub treats the round's combined site models as a step proposal: the pseudo-gradient
``delta = combined - x`` (x: the round's package) is fed to an optimizer that runs at the
hub, so the package moves further (momentum) or more evenly per coordinate (adaptive) than
a plain average would. With ``none`` the package is the combined model, as in FedAvg.

- FedAvgM: Hsu, Qi, Brown, "Measuring the Effects of Non-Identical Data Distribution for
  Federated Visual Classification", 2019: ``m = momentum * m + delta; x = x + lr * m``.
- FedAdam, FedYogi: Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2:
  ``m = b1 m + (1-b1) delta``; Adam ``v = b2 v + (1-b2) delta^2``; Yogi
  ``v = v - (1-b2) delta^2 sign(v - delta^2)``; ``x = x + lr m / (sqrt(v) + tau)``, with
  ``v`` starting at ``tau^2`` and no bias correction, as in the paper.

Every function is elementwise on float64 arrays, so a tensor updated chunk by chunk (the
streaming aggregator) and the same tensor updated whole (``flsilo simulate``) give the same
bits. State arrays are returned, never modified in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flsilo.plans.federation import SERVER_OPTIMIZERS, HubPolicy
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError

NAMES = SERVER_OPTIMIZERS
DEFAULT_LR = {"fedavgm": 1.0, "fedadam": 0.01, "fedyogi": 0.01}
STATE_SLOTS = {"none": (), "fedavgm": ("m",), "fedadam": ("m", "v"), "fedyogi": ("m", "v")}
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
"""Tensors that are statistics, not parameters (BatchNorm): averaged, never stepped."""


def fedavgm_step(
    x: np.ndarray, delta: np.ndarray, m: np.ndarray, lr: float, momentum: float
) -> tuple[np.ndarray, np.ndarray]:
    """Server momentum (Hsu et al. 2019); lr=1, momentum=0 is FedAvg."""
    m_new = momentum * m + delta
    return x + lr * m_new, m_new


def fedadam_step(
    x: np.ndarray,
    delta: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    lr: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FedAdam (Reddi et al. 2021, Algorithm 2)."""
    m_new = beta1 * m + (1.0 - beta1) * delta
    v_new = beta2 * v + (1.0 - beta2) * np.square(delta)
    return x + lr * m_new / (np.sqrt(v_new) + tau), m_new, v_new


def fedyogi_step(
    x: np.ndarray,
    delta: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    lr: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FedYogi (Reddi et al. 2021, Algorithm 2): v grows or shrinks additively."""
    m_new = beta1 * m + (1.0 - beta1) * delta
    d2 = np.square(delta)
    v_new = v - (1.0 - beta2) * d2 * np.sign(v - d2)
    return x + lr * m_new / (np.sqrt(v_new) + tau), m_new, v_new


@dataclass(frozen=True)
class ServerOptimizer:
    """A server optimizer and its hyperparameters, as recorded in a package's provenance."""

    name: str = "none"
    lr: float = 1.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    @property
    def slots(self) -> tuple[str, ...]:
        return STATE_SLOTS[self.name]

    @property
    def active(self) -> bool:
        return self.name != "none"

    def params(self) -> dict[str, float]:
        if self.name == "fedavgm":
            return {"lr": self.lr, "momentum": self.momentum}
        if self.name in ("fedadam", "fedyogi"):
            return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "tau": self.tau}
        return {}

    def text(self) -> str:
        args = ",".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}({args})" if args else self.name

    def initial(self, slot: str, count: int) -> np.ndarray:
        """State before the first step: m = 0, v = tau^2 (Reddi et al., v_{-1} >= tau^2)."""
        return np.full(count, self.tau**2 if slot == "v" else 0.0, dtype=np.float64)

    def step(
        self, x: np.ndarray, combined: np.ndarray, state: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """New package values and state for one chunk of one tensor (float64 throughout)."""
        delta = combined - x
        if self.name == "fedavgm":
            x_new, m = fedavgm_step(x, delta, state["m"], self.lr, self.momentum)
            return x_new, {"m": m}
        rule = fedadam_step if self.name == "fedadam" else fedyogi_step
        x_new, m, v = rule(
            x, delta, state["m"], state["v"], self.lr, self.beta1, self.beta2, self.tau
        )
        return x_new, {"m": m, "v": v}


def steps_tensor(name: str, dtype_is_float: bool) -> bool:
    """Whether the server optimizer moves this tensor (floats that are not statistics)."""
    return dtype_is_float and not name.endswith(BUFFER_SUFFIXES)


def make_server_optimizer(
    name: str,
    lr: float | None = None,
    momentum: float | None = None,
    betas: tuple[float, ...] | None = None,
    tau: float | None = None,
) -> ServerOptimizer:
    """Check and build a server optimizer; ``None`` takes each setting's default."""
    if name not in NAMES:
        raise UsageError(
            f"server optimizer {name!r} is not known",
            code=Code.BAD_SERVER_OPTIMIZER,
            hint=f"use one of {', '.join(NAMES)}",
        )
    base = ServerOptimizer()
    if betas is not None and len(betas) != 2:
        raise UsageError(
            f"server betas {betas!r} must be two values B1,B2",
            code=Code.BAD_SERVER_OPTIMIZER,
            hint="e.g. --server-betas 0.9,0.99",
        )
    opt = ServerOptimizer(
        name=name,
        lr=lr if lr is not None else DEFAULT_LR.get(name, 1.0),
        momentum=momentum if momentum is not None else base.momentum,
        beta1=betas[0] if betas is not None else base.beta1,
        beta2=betas[1] if betas is not None else base.beta2,
        tau=tau if tau is not None else base.tau,
    )
    ok = (
        opt.lr > 0
        and 0 <= opt.momentum < 1
        and 0 <= opt.beta1 < 1
        and 0 <= opt.beta2 < 1
        and opt.tau > 0
    )
    if not ok or not all(np.isfinite(list(opt.params().values()) or [0.0])):
        raise UsageError(
            f"server optimizer settings out of range: {opt.text()}",
            code=Code.BAD_SERVER_OPTIMIZER,
            hint="need --server-lr > 0, 0 <= momentum and betas < 1, --server-tau > 0",
        )
    return opt


def server_optimizer_for(
    config: HubPolicy,
    name: str | None = None,
    lr: float | None = None,
    momentum: float | None = None,
    betas: tuple[float, ...] | None = None,
    tau: float | None = None,
) -> ServerOptimizer:
    """The round's server optimizer: the federation's, or one named for this round only.

    The federation's hyperparameters apply only to the federation's own optimizer; a round
    that names another one takes that optimizer's defaults unless given its own settings.
    """
    chosen = name or config.server_optimizer
    if chosen == config.server_optimizer:
        lr = lr if lr is not None else config.server_lr
        momentum = momentum if momentum is not None else config.server_momentum
        betas = betas if betas is not None else config.server_betas
        tau = tau if tau is not None else config.server_tau
    return make_server_optimizer(chosen, lr, momentum, betas, tau)
