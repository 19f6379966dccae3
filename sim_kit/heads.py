"""Simulated statistics rounds: the closed-form head, through the functions a real round uses.

Each simulated site computes its head statistics with site_kit's statistics functions (the
ones ``flsilo train`` runs on a statistics package); the hub sums and solves them with
hub_kit's closed-form functions (the ones ``flsilo aggregate`` and ``audit --replay`` run).
Only the files, keys and signatures are left out.
"""

from __future__ import annotations

import torch

from flsilo.models.registry import head_module_name
from hub_kit.closed_form import solve_head, sum_statistics
from site_kit.data import Dataset
from site_kit.statistics import streamed_statistics


def solve_closed_form_head(
    model: torch.nn.Module, sites: list[Dataset], classes: int, solver: str
) -> None:
    """Replace ``model``'s head, in place, by the head solved from the sites' statistics."""
    cpu = torch.device("cpu")
    per_site = [streamed_statistics(model, d, classes, solver, cpu) for d in sites if len(d)]
    task = sites[0].task.name if sites else "classify"
    weight, bias = solve_head(solver, sum_statistics(per_site), task)
    head = model.get_submodule(head_module_name(model))
    with torch.no_grad():
        for name, values in (("weight", weight), ("bias", bias)):
            target = head.get_parameter(name)
            target.copy_(torch.from_numpy(values).to(target.dtype))
