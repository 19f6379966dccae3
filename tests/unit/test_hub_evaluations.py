"""hub_kit.evaluations: what the log and the table keep of a site's verified report, by the
figure the report leads with (flsilo.signing.evalreport.primary_figure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flsilo.signing.evalreport import VerifiedReport
from hub_kit.evaluations import evaluation_event, table
from hub_kit.events import Evaluation

PLUGIN = "mypkg.tasks:TASK"


def _verified(task: str, metrics: dict, site: str = "site-a", **fields: object) -> VerifiedReport:
    report = {"task": task, "site": site, "round": 2, "package_sha256": "ab" * 32,
              "samples": 40, "metrics": {"samples": 40, **metrics}, **fields}  # fmt: skip
    return VerifiedReport(Path(f"r0002-{site}.eval.json"), "cd" * 32, report, "SHA256:x")


@pytest.mark.parametrize(
    "task,metrics,fields,logged",
    [
        ("classify", {"accuracy": 0.9}, {}, ("accuracy", 0.9)),
        ("classify", {"accuracy": 0.9, "ece": 0.1}, {"primary_metric": "ece"}, ("accuracy", 0.9)),
        ("detect", {"accuracy": 0.2, "map50": 0.6}, {}, ("map50", 0.6)),
        (PLUGIN, {"accuracy": 0.9, "f1": 0.7}, {"primary_metric": "f1"}, ("f1", 0.7)),
        (PLUGIN, {"top1": 0.8, "f1": 0.7}, {}, ("f1", 0.7)),  # written before reports named it
        (PLUGIN, {"site": 0.7}, {"primary_metric": "site"}, ("primary", 0.7)),  # an event field
        (PLUGIN, {}, {}, ("primary", None)),  # no figure at all
    ],
)
def test_the_log_keeps_the_figure_the_report_leads_with(
    task: str, metrics: dict, fields: dict, logged: tuple[str, float | None]
) -> None:
    event = evaluation_event(_verified(task, metrics, **fields), 3)
    assert (event.metric, event.value) == logged
    line = event.to_json()
    assert (
        line[logged[0]] == logged[1]
        and line["site"] == "site-a"
        and "accuracy" not in (set(line) - set(metrics))
    )
    assert Evaluation.from_json(line) == event


def test_the_table_shows_the_reports_figure_with_an_interval_only_where_computed() -> None:
    reports = [
        _verified("classify", {"accuracy": 0.9}),  # the hub's normal interval over 40
        _verified(
            PLUGIN, {"f1": 0.7, "ci95": {"f1": [0.6, 0.8]}}, "site-b", primary_metric="f1"
        ),  # fmt: skip
        _verified(PLUGIN, {"accuracy": 0.9, "top1": 0.8}, "site-c", primary_metric="top1"),
    ]
    rows = table(reports, set())[2]
    assert rows["site-a"].metric == "accuracy" and rows["site-a"].low is not None
    assert (rows["site-b"].metric, rows["site-b"].value, rows["site-b"].low) == ("f1", 0.7, 0.6)
    assert (rows["site-c"].metric, rows["site-c"].value, rows["site-c"].low) == ("top1", 0.8, None)


def test_the_plot_never_joins_one_figure_to_another() -> None:
    """A plug-in site's report written before reports named their figure leads with its first
    by key (f1), a later one with the figure it names (top1): the plot draws them as two lines,
    each named, where one figure is shown throughout, one line per site (accuracy in %)."""
    from flsilo.cli.evaluations_cmd import _series
    from hub_kit.evaluations import table_metric

    earlier = _verified(PLUGIN, {"f1": 0.7, "top1": 0.9})
    later = _verified(PLUGIN, {"f1": 0.6, "top1": 0.8}, primary_metric="top1")
    later.report["round"] = 3
    mixed = [earlier, later]
    rows = table(mixed, set())
    assert table_metric(rows) is None
    assert _series(rows, ["site-a"], None) == {"site-a: f1": [(2, 0.7)], "site-a: top1": [(3, 0.8)]}
    same = table([_verified("classify", {"accuracy": 0.9})], set())
    assert _series(same, ["site-a"], table_metric(same)) == {"site-a": [(2, 90.0)]}


def test_the_archive_footnote_quotes_the_folder_it_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """After the last round the footnote gives the --inbox to pass with --archive: a folder
    with a space is quoted, so the line can be pasted."""
    from flsilo.cli.common import set_json
    from flsilo.cli.evaluations_cmd import _render
    from hub_kit.evaluations import Cell

    set_json(False)  # the table, as the command shows it without --json (an earlier test's
    # --json would otherwise leave notes off)

    stick = Path("/media/USB STICK/reports")
    _render({5: {"site-a": Cell(0.9, archived=False)}}, ["site-a"], [], stick, "accuracy",
            "fed-r0005.safetensors")  # fmt: skip
    said = " ".join(capsys.readouterr().err.split())
    assert "the same command with --inbox '/media/USB STICK/reports' --archive archives" in said
