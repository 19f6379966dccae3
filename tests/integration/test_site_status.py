"""``site status``, the site's own record, and ``site check-data``, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from site_kit.record import PackageArrived, Trained, events
from tests.conftest import Federation, tree_digest


def test_status_says_what_is_held_trained_and_to_carry(federation: Federation, cli) -> None:
    site = federation.sites["site-a"]
    before = tree_digest(site)
    result = cli("site", "status", site, "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["site"] == "site-a" and doc["last_round_trained"] == 0
    assert [p["state"] for p in doc["packages"]] == ["ok"]
    assert [b["file"] for b in doc["outbox"]] == ["fed-r0000-site-a.safetensors"]
    bundle = str(federation.bundles["site-a"])
    assert doc["carry"] == [bundle, bundle + ".sig"]
    assert doc["trained"][0]["train_samples"] > 0
    assert len(doc["trained"][0]["data_sha256_salted"]) == 64
    text = cli("site", "status", site)
    assert text.code == 0 and "record: 1 round trained;" in text.out
    assert tree_digest(site) == before  # read-only


def test_a_damaged_bundle_is_reported_as_damaged(federation: Federation, cli) -> None:
    bundle = federation.bundles["site-a"]
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bundle.write_bytes(bytes(data))
    result = cli("site", "status", federation.sites["site-a"])
    assert result.code == 3
    assert "DAMAGED" in result.out and "missing" not in result.out.lower()
    assert "carry to the hub" not in result.out


def test_the_site_record_is_a_hash_chain(federation: Federation, cli) -> None:
    site = federation.sites["site-a"]
    arrived, trained = (e.body for e in events(site))
    assert isinstance(arrived, PackageArrived) and isinstance(trained, Trained)
    assert trained.bundle_sha256 == trained.bundle_sha256.lower()
    text = (site / "record.jsonl").read_text()
    first, rest = text.split("\n", 1)
    (site / "record.jsonl").write_text(first.replace('"round":0', '"round":1') + "\n" + rest)
    result = cli("site", "status", site)
    assert result.code == 3 and "BROKEN" in result.out


def test_check_data_lists_every_problem_at_once(
    federation: Federation, cli, tmp_path: Path
) -> None:
    csv = tmp_path / "bad.csv"
    header = ",".join(f"f{i}" for i in range(64)) + ",label"
    good = ",".join(["0"] * 64) + ",3"
    bad_label = ",".join(["0"] * 64) + ",eleven"
    not_number = ",".join(["x"] * 64) + ",4"
    rows = [header, good] + [bad_label] * 7 + [not_number] * 6
    csv.write_text("\n".join(rows) + "\n")
    site = federation.sites["site-a"]
    result = cli("site", "check-data", site, "--data", csv, "--json")
    assert result.code == 4, result.err
    doc = json.loads(result.out)
    assert doc["ok"] is False and doc["usable"] == 1 and len(doc["problems"]) == 13
    text = cli("site", "check-data", site, "--data", csv)
    assert text.out.count("problem:") == 10 and "and 3 more problems" in text.out
    assert "13 problems; NOT ready" in text.out + text.err

    package = site / "packages" / "fed-r0000.safetensors"
    evaluate = cli("evaluate", package, "--site", site, "--data", csv)  # same loader as train
    assert evaluate.code == 4 and "13 unusable records in all" in evaluate.err
    csv.write_text("\n".join([header, good, bad_label]) + "\n")
    one = cli("site", "check-data", site, "--data", csv)
    assert one.code == 4 and "1 problem; NOT ready" in one.out + one.err

    fine = cli("site", "check-data", site)  # the data set at site init
    assert fine.code == 0, fine.out + fine.err
    assert json.loads(cli("site", "check-data", site, "--json").out)["usable"] == 300
