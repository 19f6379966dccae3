"""Per-epoch training checkpoints in the site workspace (safetensors + JSON, never pickle)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save

from flsilo.fs.atomic import atomic_writer
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import WorkspaceError


@dataclass
class Checkpoint:
    """Where a run stands: epochs finished, plus whatever the run wants to remember."""

    directory: Path

    @property
    def tensors_path(self) -> Path:
        return self.directory / "checkpoint.safetensors"

    @property
    def progress_path(self) -> Path:
        return self.directory / "progress.json"

    def read_progress(self) -> dict[str, Any]:
        if not self.progress_path.exists():
            return {}
        try:
            data: dict[str, Any] = json.loads(self.progress_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # a damaged checkpoint only costs the work it held
        return data

    def write_progress(self, progress: dict[str, Any]) -> None:
        with atomic_writer(self.progress_path) as fh:
            fh.write(json.dumps(progress, indent=1, sort_keys=True).encode())

    def save(
        self,
        epoch: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        extra: dict[str, Any],
    ) -> None:
        tensors = {
            f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()
        }
        opt = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, state in opt["state"].items():
            for key, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
                elif value is not None:
                    scalars.setdefault(str(idx), {})[key] = value
        meta = {
            "epoch": epoch,
            "param_groups": opt["param_groups"],
            "optim_scalars": scalars,
            "scheduler": scheduler.state_dict(),
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        data = save(tensors, metadata={"flsilo.checkpoint": json.dumps(meta, default=list)})
        with atomic_writer(self.tensors_path) as fh:
            fh.write(data)
        self.write_progress({**self.read_progress(), **extra, "epochs_done": epoch})

    def load(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> int:
        """Restore the last finished epoch; 0 when there is none.

        A checkpoint that exists but cannot be restored is an error naming it, never a
        silent restart: checkpoints are written atomically, so damage means something else
        touched the workspace, and the operator decides whether to start the round over.
        """
        if not self.tensors_path.exists():
            return 0
        try:
            from safetensors import safe_open

            with safe_open(str(self.tensors_path), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {})["flsilo.checkpoint"])
                tensors = {name: fh.get_tensor(name) for name in fh.keys()}
            model.load_state_dict(
                {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
            )
            state: dict[int, dict[str, Any]] = {}
            for name, value in tensors.items():
                if name.startswith("optim."):
                    _, idx, key = name.split(".", 2)
                    state.setdefault(int(idx), {})[key] = value
            for idx, scalars in meta["optim_scalars"].items():
                state.setdefault(int(idx), {}).update(scalars)
            optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
            scheduler.load_state_dict(meta["scheduler"])
            return int(meta["epoch"])
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
            raise WorkspaceError(
                f"the training checkpoint of this round cannot be restored ({exc})",
                path=self.tensors_path,
                code=Code.CHECKPOINT_DAMAGED,
                hint=f"delete the folder {self.directory} to start this round's training over",
            ) from exc
