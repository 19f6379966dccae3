"""The model card as Markdown and as one self-contained HTML page, from its evidence.

Both are rendered from the same evidence document (``hub_kit.card``), section by section in
the order of Mitchell et al.'s model cards adapted to a federation: the model and its
intended use, the federation and its plan, how it performed at each site, the rounds that
made it, its lineage, privacy, the audit, and the commands that check every claim with
stock tools. The HTML has inline CSS and images (PNG as data: URLs), no script and no
external reference, so it opens offline and prints as it shows.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from flsilo.runtime.progress import counted
from flsilo.signing.claims import PERCENT, lead_figure, metric_name, show_figure
from flsilo.tasks import primary_metric
from hub_kit.report import Verdict

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:60rem;
margin:2rem auto;padding:0 1rem;color:#1b1f24}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:right}
th:first-child,td:first-child{text-align:left}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}
pre{background:#f6f8fa;padding:.6rem;overflow-x:auto}
.ok{color:#1a7f37;font-weight:600}.warn{color:#9a6700}.muted{color:#57606a}
img{max-width:100%}.kv td{text-align:left}
"""


def pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, int | float) else "–"


def _interval(ci: Any) -> str:
    if isinstance(ci, list) and len(ci) == 2:
        return f" ({100 * ci[0]:.0f}–{100 * ci[1]:.0f})"
    return ""


def sections(doc: dict[str, Any]) -> list[tuple[str, list[list[str]] | str, list[str] | None]]:
    """(title, rows or text, header) for each section: one structure, two renderings."""
    pkg, fed = doc["package"], doc["federation"]
    plan = fed.get("plan") or {}
    out: list[tuple[str, list[list[str]] | str, list[str] | None]] = []
    out.append(
        (
            "Model",
            [
                ["package", pkg["file"]],
                ["sha256", pkg["sha256"]],
                ["round", str(pkg["round"]) + _final_note(pkg, doc.get("finality") or {})],
                ["federation", fed["id"]],
                ["task", fed["task"]],
                ["model", f"{fed['model']} ({_code(fed['model_code_digest'])})"],
                ["classes", ", ".join(fed["classes"])]
                if "charset" not in fed
                else ["charset, longest string", f"{fed['charset']}, {fed['max_length']}"],
                ["input shape", " × ".join(map(str, fed["input_shape"]))],
                *_origin_rows(fed),
                ["created", pkg["created_at"]],
            ],
            None,
        )
    )
    out.append(
        (
            "Intended use and limits",
            "A model trained by federated learning between air-gapped sites; no site's "
            "data left it. Its figures below are each site's own held-out data, signed by "
            "that site: they describe those sites' populations and equipment, not others'. "
            "Check it on your own data (flsilo evaluate) before use.",
            None,
        )
    )
    out.append(("Federation and plan", _plan_rows(fed, plan), None))
    out.append(_evaluation_section(doc))
    claims = [p for p in doc["lineage"] if p.get("hub_claim")]
    if claims:
        out.append(_claims_section(claims))
    out.append(_per_class_section(doc))
    out.append(_rounds_section(doc))
    out.append(
        (
            "Lineage",
            [
                [f"r{p['round']:04d}", p["file"], p["sha256"][:16] + "…", p["strategy"] or "init"]
                for p in doc["lineage"]
            ],
            ["round", "package", "sha256", "made by"],
        )
    )
    spent = doc.get("dp_spent") or {}
    out.append(
        (
            "Privacy",
            [[site, f"ε = {eps:.3g}"] for site, eps in sorted(spent.items())]
            if spent
            else "No differential privacy: sites shipped plain model updates.",
            ["site", "spent"] if spent else None,
        )
    )
    audit = doc["audit"]
    root = audit.get("trust_root") or {}
    out.append(
        (
            "Audit",
            f"{'PASSED' if audit['ok'] else 'FAILED'}: {audit['checks']} checks "
            f"({'with' if audit['replay'] else 'without'} replay), trusting hub key "
            f"{root.get('fingerprint')} given by {root.get('given')}.",
            None,
        )
    )
    out.append(("Check every claim yourself", "\n".join(commands(doc)), None))
    return out


def _plan_rows(fed: dict[str, Any], plan: dict[str, Any]) -> list[list[str]]:
    sched = fed.get("schedule") or {}
    hub = fed.get("hub_policy") or {}
    rows = [
        ["schedule", f"{sched.get('kind')} ({counted(sched.get('rounds', 0), 'rounds')})"],
        ["strategy", str(hub.get("strategy"))],
        ["server optimizer", str(hub.get("server_optimizer"))],
    ]
    for key in ("optimizer", "lr", "batch_size", "local_epochs", "seed", "freeze", "merge"):
        if key in plan:
            rows.append([key.replace("_", " "), str(plan[key])])
    for table in ("preprocess", "augment"):
        if isinstance(plan.get(table), dict):
            rows.append(
                [
                    table,
                    ", ".join(f"{k}={v}" for k, v in plan[table].items() if v not in ("", None)),
                ]
            )
    if plan.get("dp_budget"):
        rows.append(["DP budget per site", f"ε = {plan['dp_budget']}"])
    return rows


def _evaluation_section(doc: dict[str, Any]) -> tuple[str, Any, list[str] | None]:
    evals = doc["evaluations"]
    if not evals:
        return (
            "Performance at each site",
            "No site has sent a signed evaluation report yet "
            "(flsilo evaluate PACKAGE --site SITE --data HELD_OUT --report).",
            None,
        )
    metric = primary_metric(doc["federation"]["task"])
    if metric == "exact_match":  # sequence: strings read (multilabel reports an exact match too)
        return (
            "Performance at each site",
            [
                [
                    f"r{e['round']:04d}",
                    e["site"],
                    str(e["samples"]),
                    pct(e["metrics"].get("exact_match")),
                    pct(e["metrics"].get("cer")),
                ]
                for e in evals
            ],
            ["package", "site", "samples", "exact match", "character error rate"],
        )
    if metric != "accuracy":  # multilabel (mean AUROC), detect (mAP@0.5), a plug-in's figure
        return (
            "Performance at each site",
            [
                [f"r{e['round']:04d}", e["site"], str(e["samples"]), _shown(metric, e["metrics"])]
                for e in evals
            ],
            ["package", "site", "samples", metric_name(metric)],
        )
    rows = [
        [
            f"r{e['round']:04d}",
            e["site"],
            str(e["samples"]),
            pct(e["metrics"].get("accuracy")),
            pct(e["metrics"].get("balanced_accuracy")),
            f"{e['metrics']['ece']:.3f}" if isinstance(e["metrics"].get("ece"), float) else "–",
        ]
        for e in evals
    ]
    return (
        "Performance at each site",
        rows,
        ["package", "site", "samples", "accuracy", "balanced acc.", "ECE"],
    )


def _shown(metric: str, figures: dict[str, Any]) -> str:
    """A figure as every report shows it (``0.941``, ``93.0%``), ``–`` when absent."""
    value = figures.get(metric)
    return show_figure(metric, value) if isinstance(value, int | float) else "–"


def _final_note(pkg: dict[str, Any], standing: dict[str, Any]) -> str:
    """ " (final)" only for a final package that is final for use: with --require-evaluations
    M, once M sites' evaluation reports on it verify (hub_kit.finality)."""
    if not pkg["final"]:
        return ""
    if standing.get("final", True):
        return " (final)"
    required = standing["required"]
    need = f"{required} required site's" if required == 1 else f"{required} required sites'"
    return (
        f" (the last round's package, NOT final: {len(standing['sites'])} of the {need} "
        "evaluation reports on it verify)"
    )


def _claims_section(claims: list[dict[str, Any]]) -> tuple[str, Any, list[str] | None]:
    """The hub's own figures (aggregate --eval), named as its claims: signed by the hub in
    the package and the log, not by a site, and not recomputed by the audit. Beside the
    task's primary figure, the whole-set figures the claims carry (a classifier's balanced
    accuracy and ECE, a detector's mAP@0.5:0.95, a sequence's CER)."""
    # one federation, one task: its figure as a claim names it (a plug-in's claims written
    # before claims named it lead with their first figure by key, maybe another)
    named = [p["hub_claim"] for p in claims if p["hub_claim"].get("primary_metric")]
    lead = lead_figure((named or [claims[0]["hub_claim"]])[-1])[0]
    extras = [
        k for k in CLAIM_EXTRAS if k != lead and any(k in p["hub_claim"]["figures"] for p in claims)
    ]
    rows = [
        [
            f"r{p['round']:04d}",
            f"{c['test_set_records']} ({c['test_set_sha256'][:12]}…)",
            str(c["samples"]),
            show_figure(lead, v) if (v := c["figures"].get(lead)) is not None else "–",
            *(_claim_extra(k, c["figures"].get(k)) for k in extras),
        ]
        for p in claims
        for c in (p["hub_claim"],)
    ]
    header = ["package", "test set records (index)", "samples", metric_name(lead)]
    return (
        "Hub claims (the hub's own test set)",
        rows,
        header + [CLAIM_EXTRAS[k] for k in extras],
    )


CLAIM_EXTRAS = {
    "map": "mAP@0.5:0.95",
    "cer": "CER",
    "balanced_accuracy": "balanced acc.",
    "ece": "ECE",
}
"""Whole-set figures a hub claim may carry beside its primary one, and their columns."""


def _claim_extra(name: str, value: Any) -> str:
    if not isinstance(value, int | float):
        return "–"
    return pct(value) if name == "balanced_accuracy" else f"{value:.3f}"


def _per_class_section(doc: dict[str, Any]) -> tuple[str, Any, list[str] | None]:
    this = [e for e in doc["evaluations"] if e["round"] == doc["package"]["round"]]
    if primary_metric(doc["federation"]["task"]) == "map50":
        return _per_class_detection(this)
    rows = []
    for e in this:
        for name, row in (e["metrics"].get("per_class") or {}).items():
            ci = row.get("ci95") or {}
            rows.append(
                [e["site"], name]
                + [pct(row.get(k)) + _interval(ci.get(k)) for k in ("sensitivity", "specificity")]
                + [
                    f"{row[k]:.3f}" if isinstance(row.get(k), float) else "–"
                    for k in ("auroc", "ap")
                ]
            )
    if not rows:
        return (
            "Per class, this package",
            "No per-class figures for this package (no report on it yet, or a DP federation).",
            None,
        )
    return (
        "Per class, this package (95% bootstrap interval)",
        rows,
        ["site", "class", "sensitivity", "specificity", "AUROC", "AP"],
    )


def _per_class_detection(this: list[dict[str, Any]]) -> tuple[str, Any, list[str] | None]:
    """Detection: each class's objects and AP@0.5 (a report carries no sensitivity or
    AUROC for a detector; a class under the minimum cell size shows neither)."""
    rows = [
        [
            e["site"],
            name,
            str(row["objects"]) if isinstance(row.get("objects"), int) else "–",
            _shown("map50", {"map50": row.get("ap50")}),
        ]
        for e in this
        for name, row in (e["metrics"].get("per_class") or {}).items()
    ]
    if not rows:
        return (
            "Per class, this package",
            "No per-class figures for this package (no report on it yet, or a DP federation).",
            None,
        )
    return ("Per class, this package", rows, ["site", "class", "objects", "AP@0.5"])


def _rounds_section(doc: dict[str, Any]) -> tuple[str, Any, list[str] | None]:
    metric = primary_metric(doc["federation"]["task"])
    rows = []
    for r in doc["rounds"]:
        accepted = [s for s in r["sites"] if s["verdict"] == Verdict.ACCEPTED]
        rejected = [f"{s['site']} ({s['verdict']})" for s in r["sites"] if s not in accepted]
        rows.append(
            [
                str(r["round"]),
                ", ".join(f"{s['site']} {s['samples']}" for s in accepted),
                "; ".join(rejected) or "none",
                _shown(metric, {metric: r.get("primary_after")}),
            ]
        )
    shown = "site val. acc." if metric == "accuracy" else f"site val. {metric_name(metric)}"
    return (
        "Rounds",
        rows or "No round aggregated before this package.",
        ["round", "accepted (samples)", "rejected", shown] if rows else None,
    )


def commands(doc: dict[str, Any]) -> list[str]:
    """The stock-tool commands that check each claim, run from the hub workspace folder."""
    pkg = doc["package"]
    root = (doc["audit"].get("trust_root") or {}).get("fingerprint") or "SHA256:..."
    lines = [
        f"sha256sum packages/{pkg['file']}    # must print {pkg['sha256']}",
        f"ssh-keygen -lf hub.pub    # must print {root}",
        'ssh-keygen -Y verify -f <(echo "hub $(cat hub.pub)") -I hub -n flsilo-package '
        f"-s packages/{pkg['file']}.sig < packages/{pkg['file']}    # bash",
        "(cd rounds/0000 && sha256sum -c SHA256SUMS)    # and every other round folder",
    ]
    for e in doc["evaluations"][:3]:
        lines.append(
            f"ssh-keygen -Y check-novalidate -n flsilo-eval -s {e['archive']}.sig < {e['archive']}"
        )
        lines.append(f"ssh-keygen -Y find-principals -s {e['archive']}.sig -f allowed_signers")
    if len(doc["evaluations"]) > 3:
        lines.append(f"# and the same for the other {len(doc['evaluations']) - 3} reports above")
    lines.append(f"flsilo audit . --hub-fingerprint {root} --replay")
    return lines


def markdown(doc: dict[str, Any], plots: dict[str, bytes]) -> str:
    pkg = doc["package"]
    lines = [f"# Model card: {pkg['file']}", ""]
    lines += [f"> {w}" for w in doc.get("warnings", [])]
    for title, body, header in sections(doc):
        lines += ["", f"## {title}", ""]
        if isinstance(body, str):
            lines += ["```", body, "```"] if title.startswith("Check") else [body]
        else:
            head = header or ["", ""]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + " --- |" * len(head))
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    for name in plots:
        lines += ["", f"![{name}]({name}.png)"]
    return "\n".join(lines) + "\n"


def page(doc: dict[str, Any], plots: dict[str, bytes]) -> str:
    e = html.escape
    pkg = doc["package"]
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>Model card: {e(pkg['file'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Model card: {e(pkg['file'])}</h1>",
        f"<p class=muted>sha256 <code>{e(pkg['sha256'])}</code></p>",
    ]
    parts += [f"<p class=warn>{e(w)}</p>" for w in doc.get("warnings", [])]
    for title, body, header in sections(doc):
        parts.append(f"<h2>{e(title)}</h2>")
        if isinstance(body, str):
            tag = "pre" if title.startswith("Check") else "p"
            cls = " class=ok" if title == "Audit" and body.startswith("PASSED") else ""
            parts.append(f"<{tag}{cls}>{e(body)}</{tag}>")
            continue
        parts.append("<table>" if header else "<table class=kv>")
        if header:
            parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in body]
        parts.append("</table>")
    for name, png in plots.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<h2>{e(name.replace("-", " "))}</h2><img alt="{e(name)}" src="data:image/png;base64,{data}">'
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def plots(doc: dict[str, Any]) -> dict[str, bytes]:
    """PNG plots (the plot extra): each site's accuracy per package, and the sites'
    validation accuracy per round. Empty without matplotlib (the card says so)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return {}
    out: dict[str, bytes] = {}
    series: dict[str, list[tuple[int, float]]] = {}
    metric = primary_metric(doc["federation"]["task"])
    scale, unit, name = (
        (100, " (%)", metric_name(metric)) if metric in PERCENT else (1, "", metric_name(metric))
    )
    for ev in doc["evaluations"]:
        value = ev["metrics"].get(metric)
        if isinstance(value, float):
            series.setdefault(ev["site"], []).append((ev["round"], scale * value))
    rounds = [
        (r["round"], scale * r["primary_after"])
        for r in doc["rounds"]
        if isinstance(r.get("primary_after"), int | float)  # 0.0 is a figure (mAP, AUROC)
    ]
    for file, data, ylabel in (
        ("accuracy-per-site", series, f"{name} on the site's held-out data{unit}"),
        (
            "validation-per-round",
            {"sites (weighted)": rounds} if rounds else {},
            f"validation {name}{unit}",
        ),
    ):
        if not data:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 3.2))
        for label, points in data.items():
            ax.plot(*zip(*sorted(points), strict=True), marker="o", linewidth=1, label=label)
        rounds_seen = sorted({x for points in data.values() for x, _ in points})
        if len(rounds_seen) <= 8:
            ax.set_xticks(rounds_seen)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        out[file] = buf.getvalue()
    return out


def _code(recorded: str) -> str:
    """A code digest, shortened; a library identity (torchvision==0.29.1:resnet18) whole."""
    return recorded if "==" in recorded else f"code digest {recorded[:16]}…"


def _origin_rows(fed: dict[str, Any]) -> list[list[str]]:
    """Low-rank adapters, and the published checkpoint the model started from."""
    rows = (
        [["adapters", f"{fed['adapters']} (merged into the weights)"]] if "adapters" in fed else []
    )
    start = fed.get("start")
    if start:
        src = start["source"]
        rows.append(["started from", f"{src['file']} (sha256 {src['sha256']}), {start['spec']}"])
    return rows
