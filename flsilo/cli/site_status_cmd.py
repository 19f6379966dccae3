"""``flsilo site status`` and ``flsilo site check-data``: checks before a trip, read-only."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flsilo.cli.common import emit_json, info, plural, set_json, stdout
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import DataError

if TYPE_CHECKING:
    from site_kit.status import SiteStatus

JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable report.")]


def status(
    site_dir: Annotated[Path, typer.Argument(help="Site workspace.")],
    json_out: JsonOut = False,
) -> None:
    """Which package the site holds, what it trained, what sits in the outbox, what to carry.

    Every file is verified; a damaged one is reported as damaged. Nothing is changed and no
    passphrase is asked. Exit 3 when a package or bundle is damaged or unsigned.
    Example: flsilo site status site
    """
    set_json(json_out)
    from dataclasses import asdict

    from site_kit.status import site_status

    st = site_status(site_dir)
    bad = [f for f in st.packages + st.outbox if f.state in ("damaged", "unsigned")]
    ok = not bad and st.record_ok
    if json_out:
        emit_json("site status", ok, {"site_dir": str(site_dir), **asdict(st)})
    else:
        out = stdout()
        out.print(f"site {st.site} in federation {st.federation}")
        rotated = st.hub_fingerprint != st.confirmed_hub_fingerprint
        out.print(f"hub key: {st.hub_fingerprint}" + (" (rotated)" if rotated else ""))
        if rotated:
            out.print(f"confirmed at init: {st.confirmed_hub_fingerprint}")
        if st.data is None:
            out.print("data: none set (pass --data to train, or: flsilo site set-data)")
        elif not st.data_found:
            out.print(
                f"data: {st.data} NOT FOUND (fix it with: flsilo site set-data)", soft_wrap=True
            )
        else:
            out.print(f"data: {st.data}", soft_wrap=True)
        trained = st.last_round_trained
        out.print(f"last round trained: {trained if trained >= 0 else 'none yet'}")
        for title, files in (("packages", st.packages), ("outbox", st.outbox)):
            out.print(f"{title}:" + ("" if files else " (empty)"))
            for f in files:
                word = {
                    "ok": "verified",
                    "damaged": "DAMAGED",
                    "unsigned": "UNSIGNED",
                    "old-key": "OLD KEY",
                }[f.state]
                extra = f" ({f.detail})" if f.state != "ok" else (_final(st) if f.final else "")
                out.print(f"  {f.file}: {word}{extra}", soft_wrap=True)
        for line in st.misnamed:  # a package a copy renamed is listed nowhere else
            info(f"warning: {line}")
        if st.trained:
            last = st.trained[-1]
            rounds = len({e.get("round") for e in st.trained})  # a retrained round counts once
            runs = f" in {len(st.trained)} runs" if len(st.trained) > rounds else ""
            out.print(
                f"record: {rounds} round{'s' if rounds != 1 else ''} trained{runs}; last on "
                f"{last['train_samples']} samples, data digest {last['data_sha256_salted'][:16]}…"
            )
        if not st.record_ok:
            out.print(f"record: BROKEN: {st.record_detail}", soft_wrap=True)
        if st.carry:
            out.print("carry to the hub:")
            for p in st.carry:  # one per line: a path is never folded
                out.print(f"  {shlex.quote(p)}", soft_wrap=True)
        if st.next_package:
            info(
                f"next: flsilo train {shlex.quote(st.next_package)} --site {shlex.quote(str(site_dir))}"
            )
    if not ok:
        raise typer.Exit(3)


def _final(st: SiteStatus) -> str:
    """How a verified final package is marked: final, or final for use only once the
    evaluation reports the federation requires verify at the hub."""
    m = st.require_evaluations
    if not m:
        return " final"
    whose = "1 site's" if m == 1 else f"{m} sites'"
    return (
        f" (the schedule's last: final for use once {whose} signed evaluation "
        "reports on it verify at the hub; send this site's with flsilo evaluate PACKAGE "
        "--site SITE_DIR --data HELD_OUT --report)"
    )


def check_data(
    site_dir: Annotated[Path, typer.Argument(help="Site workspace.")],
    data: Annotated[
        Path | None, typer.Option(help="Data to check (default: the one set at site init).")
    ] = None,
    data_format: Annotated[
        str | None,
        typer.Option(
            help="imagefolder, images-csv, csv, npz, dicom, video, yolo or coco (default: guessed)."
        ),
    ] = None,
    preview: Annotated[
        Path | None,
        typer.Option(
            help="Write a PNG grid of samples as the network sees them: preprocessed by the "
            "plan, and augmented as training draws them."
        ),
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Check data against the federation's classes and input shape before any training.

    Lists every unusable record (the first 10, then a count) and samples per class.
    Example: flsilo site check-data site --data /data/images --preview grid.png
    """
    set_json(json_out)
    from dataclasses import asdict

    from site_kit.checkdata import SHOWN
    from site_kit.checkdata import check_data as run_check

    try:
        result = run_check(site_dir, data, data_format, preview)
    except DataError as err:
        if err.code != Code.EMPTY_DATA:
            raise
        from site_kit.checkdata import DataCheck

        result = DataCheck(str(data or site_dir), 0, [], [], [err.one_line()])
    if json_out:
        emit_json(
            "site check-data",
            result.ok,
            {**asdict(result), "missing_classes": result.missing_classes},
        )
    else:
        out = stdout()
        out.print(f"{result.data}: {result.usable} usable samples", soft_wrap=True)
        for name, n in zip(result.classes, result.class_counts, strict=True):
            out.print(
                f"  {name}: {n}" + ("  (none here: fine if this site has none)" if n == 0 else "")
            )
        clips = result.clips
        for line in clips[:SHOWN]:
            out.print(f"  frames: {line}", soft_wrap=True)
        if len(clips) > SHOWN:
            out.print(f"  ... and {len(clips) - SHOWN} more files with sampled frames")
        for line in result.preprocess:
            out.print(f"  preprocessing: {line}", soft_wrap=True)
        if result.preview:
            out.print(f"  preview: {result.preview}", soft_wrap=True)
        for line in result.problems[:SHOWN]:
            out.print(f"  problem: {line}", soft_wrap=True)
        if len(result.problems) > SHOWN:
            out.print(f"  ... and {len(result.problems) - SHOWN} more problems")
        verdict = "ready to train" if result.ok else "NOT ready: fix the problems above"
        info(f"{plural(len(result.problems), 'problem')}; {verdict}")
    if not result.ok:
        raise typer.Exit(4)
