"""``flsilo inspect``: show what an artifact says about itself, without trusting it (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from flsilo import __version__
from flsilo.cli.common import FINAL_UNKNOWN, emit_json, plural, set_json, stdout
from flsilo.cli.round_report import pct
from flsilo.format.artifact import check_finite, check_is_file, read_signature, scan_file
from flsilo.format.manifest import from_jsonable, to_jsonable
from flsilo.plans.preprocessing import Augment, Preprocess, preprocess_lines
from flsilo.runtime.errors import FlsiloError
from flsilo.signing.claims import lead_figure, show_metric
from flsilo.signing.release import officer_states
from flsilo.signing.sshsig import check_signature


def inspect(
    file: Annotated[Path, typer.Argument(help="A bundle or package .safetensors file.")],
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Show manifest, tensors and signature of FILE. Trust is not checked: use verify for that.

    Example: flsilo inspect inbox/fed-r0003-site-a.safetensors
    """
    set_json(json_out)
    check_is_file(file)
    signature_info: dict[str, Any]
    try:
        sig = read_signature(file)
    except FlsiloError as err:
        sig = None
        signature_info = {"status": "unreadable", "detail": err.one_line()}
    scan = scan_file(file, hash_algorithms=(sig.hash_algorithm,) if sig else ())
    if sig is not None:
        try:
            check_signature(
                sig, scan.manifest.namespace, scan.digests[sig.hash_algorithm], source=str(file)
            )
            signature_info = {"status": "valid (signer not checked against any trust)"}
        except FlsiloError as err:
            signature_info = {"status": "INVALID", "detail": err.message}
        signature_info.update(
            {"fingerprint": sig.fingerprint, "namespace": sig.namespace, "hash": sig.hash_algorithm}
        )
    tensors = [
        {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in scan.header.tensors
    ]
    report = {
        "file": str(file),
        "sha256": scan.sha256,
        "size": scan.header.file_size,
        "signature": signature_info,
        "manifest": to_jsonable(scan.manifest),
        "tensors": tensors,
        "parameters": sum(t.numel for t in scan.header.tensors),
        "nonfinite": scan.nonfinite,
        "release": _release(scan),
    }
    if json_out:
        emit_json("inspect", not scan.nonfinite, report)
    else:
        render(report)
    check_finite(scan)


def _release(scan: Any) -> dict[str, Any] | None:
    """The release officers a package names and each one's signature beside it."""
    states = officer_states(scan)
    if states is None:
        return None
    required, officers = states
    return {"required": required, "officers": [to_jsonable(o) for o in officers]}


def render(report: dict[str, Any]) -> None:
    m = report["manifest"]
    out = stdout()
    # No box and labels of at most 14 characters: a whole sha256 (64) fits 80 columns.
    table = Table(
        title=f"flsilo inspect {Path(report['file']).name}",
        show_header=False,
        box=None,
        pad_edge=False,
    )
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    rows = [
        ("kind", m["kind"]),
        ("format", f"version {m['format_version']}"),
        ("federation", m["federation"]),
        ("round", str(m["round"])),
        ("created", m["created_at"]),
        ("model", f"{m['model']['spec']} ({_code(m['model']['code_digest'])})"),
        ("classes", ", ".join(m["model"]["classes"])),
        ("input shape", "x".join(str(d) for d in m["model"]["input_shape"])),
        *_model_rows(m["model"]),
        ("tensors", f"{len(report['tensors'])} ({report['parameters']:,} values)"),
        ("sha256", report["sha256"]),
        ("signature", report["signature"]["status"]),
        ("signer key", report["signature"].get("fingerprint", "-")),
        ("software", ", ".join(f"{k} {v}" for k, v in sorted(m["software"].items()))),
        ("inspected with", f"flsilo {__version__}"),
    ]
    if m["bundle"]:
        b = m["bundle"]
        rows += [
            ("site", b["site"]),
            ("samples", str(b["num_samples"])),
            ("base package", b["base_package_sha256"]),
            ("plan", _plan(b["plan"])),
            *_preprocess_rows(b["plan"]),
            ("global (val)", _metrics(b["metrics_global"], m["model"].get("task"))),
            ("trained (val)", _metrics(b["metrics_trained"], m["model"].get("task"))),
        ]
        if b.get("dp"):
            d = b["dp"]
            rows.append(
                (
                    "privacy spent",
                    f"epsilon {d['epsilon_round']:.3f} this round, {d['epsilon_total']:.3f} in "
                    f"total over {d['rounds']} round(s) at delta {d['delta']:g} ({d['accountant']});"
                    f" sigma {d['noise_multiplier']:.4g}, q {d['sample_rate']:.4g}, {d['steps']} steps",
                )
            )
    if m["package"]:
        p = m["package"]
        rows += [
            ("schedule", f"{p['schedule']['kind']} ({plural(p['schedule']['rounds'], 'round')})"),
            ("final", f"the schedule's last package; {FINAL_UNKNOWN}" if p["final"] else "no"),
            ("plan", _plan(p["plan"]) if p["plan"] else "- (nothing trains on the last package)"),
            *(_preprocess_rows(p["plan"]) if p["plan"] else _expects(p.get("preprocess"))),
            ("parent", p["parent_sha256"] or "-"),
        ]
        if p["provenance"]:
            prov = p["provenance"]
            rows.append(("strategy", prov["strategy"]))
            for i in prov["inputs"]:
                rows.append(
                    ("input", f"{i['site']}: {i['samples']} samples, weight {i['weight']:.4f}")
                )
            for r in prov["rejects"]:
                rows.append(("rejected", f"{r['site']}: {r['reason']}"))
        rows += _claim_rows(p.get("hub_evaluation"))
    rows += _release_rows(report.get("release"))
    if report["nonfinite"]:
        rows.append(("NON-FINITE", ", ".join(f"{k}: {v}" for k, v in report["nonfinite"].items())))
    for k, v in rows:
        table.add_row(k, v)
    out.print(table)


def _model_rows(model: dict[str, Any]) -> list[tuple[str, str]]:
    """The task (unless classify), adapters and the start file's ``backbone import`` record,
    when the model has them."""
    rows = []
    task = model.get("task")
    if task:
        extra = [f"thresholds {task['thresholds']}"] if task.get("thresholds") else []
        extra += [f"charset {task['charset']!r}"] if task.get("charset") else []
        extra += [f"max length {task['max_length']}"] if task.get("max_length") else []
        rows.append(("task", ", ".join([task["name"], *extra])))
    if model.get("adapters"):
        rows.append(("adapters", f"{model['adapters']} (base frozen; B and the head train)"))
    start = model.get("start")
    if start:
        src, libs = start["source"], start["libraries"]
        norm = start.get("normalize")
        rows.append(
            (
                "start from",
                f"{src['file']} sha256 {src['sha256']}\n  imported as {start['spec']} with "
                + ", ".join(f"{k} {v}" for k, v in sorted(libs.items()))
                + (f"\n  normalise mean {norm['mean']} std {norm['std']}" if norm else ""),
            )
        )
    return rows


def _claim_rows(claim: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The hub's claim (aggregate --eval): its figures, as the hub's, and the test set."""
    if not claim:
        return []
    f = claim["figures"]
    name, value = lead_figure(claim)
    bal = f", balanced accuracy {pct(f['balanced_accuracy'])}" if "balanced_accuracy" in f else ""
    return [
        (
            "hub claim",
            f"{show_metric(name, value)}{bal} on the hub's test set "
            f"({claim['samples']} of {claim['test_set_records']} records, {claim['data_format']}; "
            "the hub's figures, not recomputed by this command)",
        ),
        ("hub test set", f"index sha256 {claim['test_set_sha256']}"),
    ]


def _code(recorded: str) -> str:
    """A code digest, shortened; a library identity (torchvision==0.29.1:resnet18) whole."""
    return recorded if "==" in recorded else f"code {recorded[:12]}…"


def _release_rows(release: dict[str, Any] | None) -> list[tuple[str, str]]:
    if release is None:
        return []
    rows = [("release", f"{release['required']} of {len(release['officers'])} officers must sign")]
    for o in release["officers"]:
        state = {"valid": "signed", "release-missing": "not signed yet"}.get(
            o["signature"], f"INVALID ({o['signature']})"
        )
        rows.append(("officer", f"{o['id']}: {state}\n  {o['fingerprint']}"))
    return rows


def _plan(plan: dict[str, Any]) -> str:
    text = (
        f"{plan['local_epochs']} epochs, batch {plan['batch_size']}, {plan['optimizer']} "
        f"lr {plan['lr']}, seed {plan['seed']}, mu {plan['fedprox_mu']}"
    )
    sigma, eps = plan.get("dp_noise_multiplier", 0), plan.get("dp_epsilon", 0)
    if sigma > 0 or eps > 0:
        how = f"sigma {sigma:g}" if sigma > 0 else f"epsilon {eps:g}/round"
        text += (
            f"; DP-SGD {how}, clip {plan['dp_clip']:g}, delta {plan['dp_delta']:g}, "
            f"budget {plan['dp_budget']:g}"
        )
    return text


def _preprocess_rows(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """The plan's ``[plan.preprocess]`` and ``[plan.augment]`` tables, a setting a line."""
    pre = from_jsonable(Preprocess, plan["preprocess"], "preprocess")
    augment = from_jsonable(Augment, plan["augment"], "augment")
    return [("preprocess", "\n".join(preprocess_lines(pre, augment)))]


def _expects(preprocess: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The preprocessing a final package's model expects (what export writes into ONNX)."""
    if not preprocess:
        return []
    lines = preprocess_lines(from_jsonable(Preprocess, preprocess, "preprocess"), Augment())
    return [("preprocess", "\n".join(lines[:-1]))]  # no training: no augmentation line


def _metrics(metrics: dict[str, Any] | None, task: dict[str, Any] | None) -> str:
    """A site's validation figures: the task's primary metric by name (classify: the
    accuracy as a fraction, as ever), the loss and the samples."""
    if not metrics:
        return "-"
    from flsilo.tasks import primary_metric

    metric = primary_metric(task["name"] if task else "classify")
    lead = (
        f"accuracy {metrics['accuracy']:.4f}"
        if metric == "accuracy"
        else show_metric(metric, (metrics.get("values") or {}).get(metric))
    )
    return f"{lead}, loss {metrics['loss']:.4f} ({metrics['samples']} samples)"
