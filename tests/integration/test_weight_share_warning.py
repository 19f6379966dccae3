"""One site taking most of a round's weight is visible: at hub init and in the aggregate
report, whenever no --max-weight-share is set."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Federation, make_key

DIGITS = ",".join(str(d) for d in range(10))


def _init(cli, root: Path, *extra: str):
    make_key(root / "hub")
    return cli(
        "hub", "init", root / "h", "--federation", "fed", "--model", "logreg",
        "--classes", DIGITS, "--input-shape", "1,8,8", "--key", root / "hub", *extra,
    )  # fmt: skip


def test_hub_init_warns_when_no_weight_share_cap_is_set(cli, tmp_path: Path) -> None:
    plain = _init(cli, tmp_path / "a")
    assert plain.code == 0, plain.err
    assert "warning: no --max-weight-share is set" in plain.err
    assert "--max-weight-share 0.4" in " ".join(plain.err.split())
    shown = _init(cli, tmp_path / "b", "--json")
    assert shown.code == 0 and "no --max-weight-share" in json.loads(shown.out)["warnings"][0]
    capped = _init(cli, tmp_path / "c", "--max-weight-share", "0.5", "--json")
    assert capped.code == 0 and json.loads(capped.out)["warnings"] == []
    assert "warning" not in _init(cli, tmp_path / "d", "--max-weight-share", "0.5").err


def test_the_aggregate_report_warns_when_one_site_holds_most_of_the_weight(
    federation: Federation, cli
) -> None:
    fed = federation
    fed.carry()
    preview = json.loads(cli("aggregate", fed.hub, "--dry-run", "--json").out)["report"]
    rows = {r["site"]: r["samples"] for r in preview["rows"]}
    share = rows["site-a"] / sum(rows.values())
    assert share > 0.5  # the shared federation: site-a holds 60% of the samples
    assert preview["weight_warning"].startswith(f"site-a holds {100 * share:.0f}% of this round")
    said = " ".join(cli("aggregate", fed.hub, "--dry-run").err.split())
    assert f"warning: site-a holds {100 * share:.0f}% of this round's weight" in said
    assert "no --max-weight-share is set" in said and "--max-weight-share 0.4" in said
    # with a cap (here for this round) the aggregator enforces it: nothing to warn about
    done = cli("aggregate", fed.hub, "--max-weight-share", "0.6", "--json")
    assert done.code == 0, done.err
    assert json.loads(done.out)["report"]["weight_warning"] is None
