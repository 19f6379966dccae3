"""Run flsilo's parsers under atheris (coverage-guided fuzzing) for as long as you like.

    pip install atheris==3.0.0         # has a wheel for CPython 3.11 on Linux x86-64
    python tests/fuzz/fuzz_parsers.py safetensors -max_total_time=600 tests/fuzz/seeds

The first argument names the target (``list`` prints them); the rest goes to libFuzzer. Any
exception other than a FlsiloError is a finding: libFuzzer saves the input as ``crash-*``;
add it to ``tests/fuzz/seeds/`` with the fix so the property tests keep it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

try:
    import atheris  # an optional tool: see the docstring
except ImportError:  # pragma: no cover - the list still works without it
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["flsilo", "hub_kit", "tests.fuzz"]):
        from flsilo.runtime.errors import FlsiloError
        from tests.fuzz import targets
else:
    from flsilo.runtime.errors import FlsiloError
    from tests.fuzz import targets

TARGETS = {
    "safetensors": targets.safetensors_header,
    "manifest": targets.manifest,
    "sshsig": targets.sshsig,
    "allowed-signers": targets.allowed_signers,
    "event-log": targets.event_log,
    "federation": targets.federation_toml,
    "public-key": targets.public_key,
    "private-key": targets.private_key,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        print("targets:", ", ".join(sorted(TARGETS)), file=sys.stderr)
        raise SystemExit(0 if len(sys.argv) > 1 and sys.argv[1] == "list" else 2)
    if atheris is None:
        raise SystemExit("atheris is not installed: pip install atheris==3.0.0")

    parse = TARGETS[sys.argv[1]]

    def one_input(data: bytes) -> None:
        try:
            parse(data)
        except FlsiloError:
            pass

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
