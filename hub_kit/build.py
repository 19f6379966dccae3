"""Step 3 of a round: weights (after any share cap), then the accepted bundles streamed
into the next package as it is written into staging, with any server optimizer state, and
signed. Nothing outside the staging folder changes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from flsilo.format import manifest as mf
from flsilo.format.readpass import CHUNK_BYTES, run_on_chunk
from flsilo.signing.keys import PrivateKey
from flsilo.signing.sshsig import sign_digest
from hub_kit.commit import StagedRound
from hub_kit.gates import Intake, stream_inputs
from hub_kit.hubeval import TestSetEvaluator, Unscored
from hub_kit.packaging import package_image, package_manifest, write_package_stream
from hub_kit.roundmath import (
    RoundView,
    compute_round,
    continued_start,
    next_statistics,
    open_server,
    strategy_record,
)
from hub_kit.roundprep import Prepared
from hub_kit.server_state import STATE_DIR, ServerRun, state_name
from hub_kit.state import release_policy
from hub_kit.strategies.base import Rule
from hub_kit.streaming import SiteFigures, Writer
from hub_kit.verdicts import Candidate, Rejection
from hub_kit.weighting import cap_shares, check_share_cap


@dataclass(frozen=True)
class Built:
    """The signed next package, staged but not yet visible."""

    staged_path: Path
    final_path: Path
    sha256: str
    data_sha256: str
    manifest: mf.Manifest
    weights: list[float]
    capped: list[bool]
    figures: list[SiteFigures]
    provenance: mf.Provenance
    server: str


def build_package(
    prep: Prepared,
    taken: Intake,
    staged: StagedRound,
    key: PrivateKey,
    evaluator: TestSetEvaluator | None = None,
) -> Built:
    """Step 3: weights, then the accepted bundles streamed into the next package, signed,
    written into staging with any server state (nothing outside the staging folder changes).

    With an ``evaluator`` (``aggregate --eval``) the round is computed once into memory
    and scored there; the package is then written once, with the hub's claim in its
    manifest."""
    candidates = taken.candidates
    policy, rule, view = prep.policy, prep.policy.rule, taken.view
    if policy.max_weight_share is not None:
        check_share_cap(policy.max_weight_share, len(candidates))
    weights, capped = _weights(candidates, policy.max_weight_share)
    inputs = stream_inputs(candidates, view, weights)
    provenance = _provenance(view, rule, candidates, weights, taken.result.rejections, prep.fisher)
    assert prep.package.manifest.package is not None
    start = continued_start(
        prep.ws.root, policy.server, view, prep.package.manifest.package.provenance
    )
    run = open_server(start, view.layout)
    state_in = start.sha256 if start is not None else None  # the state it steps from
    data_hash = _DataDigest()

    def compute(write: Writer) -> list[SiteFigures]:
        # the gates' first pass (of exactly these inputs) gives a two-pass rule its Gram matrix
        return compute_round(
            view, inputs, rule, write, gram=taken.gram, fisher=prep.fisher, server=run
        )

    def hashed(write: Writer) -> list[SiteFigures]:
        def both(chunk: memoryview) -> object:
            run_on_chunk([write, data_hash.update], chunk)  # file write+hash, data hash at once
            return None

        return compute(both)

    try:
        provenance = _server_step(prep, staged, run, state_in, compute, provenance)
        manifest = package_manifest(
            prep.ws.config,
            prep.package.manifest.model,
            prep.round + 1,
            prep.state.packages[prep.round],
            provenance,
            release=release_policy(prep.state, prep.ws.config.hub.release_signers),
            log_head=prep.state.log_head,  # the head before this round's commit
            key_chain=tuple(prep.state.rotations),
            statistics=next_statistics(view, inputs, prep.package.manifest.package.plan),
        )
        produce: Callable[[Writer], list[SiteFigures]] = hashed
        if evaluator is not None:
            manifest, produce = _with_claim(prep, manifest, hashed, key, evaluator, data_hash)
        staged_path, sha, figures = write_package_stream(
            staged.publish / prep.ws.packages_dir.name,
            manifest,
            prep.package.header.tensors,
            produce,
            key,
        )
    finally:
        if run is not None:
            run.close()
    return Built(
        staged_path=staged_path,
        final_path=prep.ws.packages_dir / staged_path.name,
        sha256=sha,
        data_sha256=data_hash.hexdigest(),
        manifest=manifest,
        weights=weights,
        capped=capped,
        figures=figures,
        provenance=provenance,
        server=policy.server.text() if run is not None else "none",
    )


class _DataDigest:
    """sha256 of a package's data section as it is written."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, chunk: memoryview) -> None:
        self._hash.update(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _with_claim(
    prep: Prepared,
    manifest: mf.Manifest,
    produce: Callable[[Writer], list[SiteFigures]],
    key: PrivateKey,
    evaluator: TestSetEvaluator,
    data_hash: _DataDigest,
) -> tuple[mf.Manifest, Callable[[Writer], list[SiteFigures]]]:
    """The manifest with the hub's claim, and what writes the package's data section: the
    round computed once into memory (the package without its claim, signed there and
    never written), scored by ``evaluator``; the package is then written from those bytes."""
    layout = prep.package.header.tensors
    image, start, figures = package_image(manifest, layout, produce)
    signature = sign_digest(key, manifest.namespace, hashlib.sha256(image).digest())
    name = prep.ws.packages_dir / mf.artifact_name(manifest.federation, manifest.round)
    claim = evaluator(Unscored(name, image, signature), prep.trust, data_hash.hexdigest())
    assert manifest.package is not None
    manifest = replace(manifest, package=replace(manifest.package, hub_evaluation=claim))

    def from_memory(write: Writer) -> list[SiteFigures]:
        view = memoryview(image)
        for at in range(start, len(image), CHUNK_BYTES):
            write(view[at : at + CHUNK_BYTES])
        return figures

    return manifest, from_memory


def _weights(candidates: list[Candidate], cap: float | None) -> tuple[list[float], list[bool]]:
    raw = [c.weight for c in candidates]
    if cap is None:
        return raw, [False] * len(raw)
    return cap_shares(raw, cap)


def _server_step(
    prep: Prepared,
    staged: StagedRound,
    run: ServerRun | None,
    state_in: str | None,
    compute: Callable[[Writer], object],
    provenance: mf.Provenance,
) -> mf.Provenance:
    """The provenance with the server step (its new state staged), when the round has one."""
    federation = prep.ws.config.federation
    state_out = _server_pass(staged, federation, prep.round, run, compute)
    if run is None or state_out is None:
        return provenance
    step = mf.ServerStep(
        prep.policy.server.name,
        prep.policy.server.params(),
        state_in,
        state_out,
        state_name(federation, prep.round + 1),
    )
    return replace(provenance, server=step)


def _server_pass(
    staged: StagedRound,
    federation: str,
    round_: int,
    run: ServerRun | None,
    compute: Callable[[Writer], object],
) -> str | None:
    """Run the aggregation once without writing, to fix the new server state; stage it.

    The package's provenance names the state's sha256 and is written before its tensors, so
    the state is computed first; the package pass then recomputes the same values. The
    state file is published with the package, after the commit (hub_kit.commit).
    """
    if run is None:
        return None
    compute(lambda _chunk: None)
    return run.write(staged.output(f"{STATE_DIR}/{state_name(federation, round_ + 1)}"))


def _provenance(
    view: RoundView,
    rule: Rule,
    candidates: list[Candidate],
    weights: list[float],
    rejections: list[Rejection],
    fisher: bool,
) -> mf.Provenance:
    strategy_name, strategy_params = strategy_record(view, rule)
    return mf.Provenance(
        strategy=strategy_name,
        strategy_params=strategy_params,
        inputs=tuple(
            mf.ProvenanceInput(
                site=c.site,
                sha256=c.verified.sha256,
                samples=c.samples,
                weight=w,
                round=c.verified.manifest.round,
            )
            for c, w in zip(candidates, weights, strict=True)
        ),
        rejects=tuple(
            mf.ProvenanceReject(site=x.site, sha256=x.sha256, reason=x.error.code)
            for x in sorted(rejections, key=lambda x: (x.site, x.sha256, x.error.code))
        ),
        merge="fisher" if fisher else "average",
    )
