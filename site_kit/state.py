"""The site's rollback state (``SITE_DIR/state.json``), typed like the hub's folded state.

What a site remembers between runs so that an old or forked package is refused: the last
round it trained and the package it trained for each round, and, after hub key rotations,
the hub key its chain of statements led to and every hub key it left behind. The file is
JSON with sorted keys and one-space indents, written whole (atomically) at each change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from flsilo.format.manifest import UPGRADE_HINT
from flsilo.fs.atomic import write_text
from flsilo.fs.jsonfields import LEFT_OUT, FieldError, JsonFields
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import WorkspaceError

STATE_FILE = "state.json"


@dataclass(frozen=True)
class SiteState(JsonFields):
    last_round: int = -1
    """The newest round this site trained (-1: none yet)."""
    packages: Mapping[str, str] = field(default_factory=dict)
    """Round (as text, a JSON key) -> sha256 of the package trained for it."""
    hub_key: str | None = field(default=None, metadata=LEFT_OUT)
    """The hub key a rotation chain led to (OpenSSH line); left out: the confirmed one."""
    hub_keys_before: tuple[str, ...] | None = field(default=None, metadata=LEFT_OUT)
    """Every hub key this site trusted and left at a rotation, oldest first."""

    def package_for(self, round_: int) -> str | None:
        return self.packages.get(str(round_))

    def trained(self, round_: int, package_sha: str) -> SiteState:
        """This state after training ``round_`` on the package ``package_sha``."""
        return replace(
            self,
            last_round=max(self.last_round, round_),
            packages={**self.packages, str(round_): package_sha},
        )

    def followed(self, key: str, left: Sequence[str]) -> SiteState:
        """This state after a rotation chain led to ``key``, leaving the keys ``left``."""
        return replace(self, hub_key=key, hub_keys_before=(*(self.hub_keys_before or ()), *left))


def read_state(root: Path) -> SiteState:
    path = root / STATE_FILE
    if not path.exists():
        return SiteState()
    try:
        return SiteState.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FieldError as err:
        hint = (
            UPGRADE_HINT
            if err.newer
            else "it records the last round trained; restore it from backup"
        )
        raise WorkspaceError(
            f"{STATE_FILE} is damaged ({err})", path=path, code=Code.STATE, hint=hint
        ) from err
    except (OSError, ValueError) as exc:
        raise WorkspaceError(
            f"{STATE_FILE} is damaged ({exc})",
            path=path,
            code=Code.STATE,
            hint="it records the last round trained; restore it from backup",
        ) from exc


def write_state(root: Path, state: SiteState) -> None:
    write_text(root / STATE_FILE, json.dumps(state.to_json(), indent=1, sort_keys=True) + "\n")
