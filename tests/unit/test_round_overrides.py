"""One parameter object for a round's overrides (hub_kit.roundprep.RoundOverrides), shared
by aggregate, its dry run and hub status --inbox; hub init's configuration built in the hub
kit (hub_kit.initconfig); the dry run's exit status from hub_kit.dryrun."""

from __future__ import annotations

import shutil

import pytest

from flsilo.plans.federation import HubPolicy
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError
from hub_kit.dryrun import inbox_report
from hub_kit.initconfig import InitOptions, federation_config
from hub_kit.roundprep import RoundOverrides, round_policy
from hub_kit.workspace import HubWorkspace
from tests.conftest import Federation


def test_no_override_is_the_federations_policy(federation: Federation) -> None:
    ws = HubWorkspace.open(federation.hub)
    policy = round_policy(ws, RoundOverrides())
    assert (policy.min_sites, policy.norm_gate, policy.server.name) == (2, None, "none")
    assert policy.need() == 2


def test_server_optimizer_is_assembled_from_the_overrides(federation: Federation) -> None:
    ws = HubWorkspace.open(federation.hub)
    policy = round_policy(
        ws, RoundOverrides(server_optimizer="fedadam", server_betas=(0.8, 0.95), min_sites=1)
    )
    assert policy.server.text() == "fedadam(lr=0.01,beta1=0.8,beta2=0.95,tau=0.001)"
    assert policy.min_sites == 1
    with pytest.raises(UsageError) as err:
        round_policy(ws, RoundOverrides(server_optimizer="fedadam", server_lr=-1.0))
    assert err.value.code is Code.BAD_SERVER_OPTIMIZER
    with pytest.raises(UsageError) as err:
        round_policy(ws, RoundOverrides(cosine_gate=2.0))
    assert err.value.code is Code.BAD_COSINE_GATE


def test_inbox_check_returns_the_exit_status(federation: Federation) -> None:
    federation.carry("site-a")
    check = inbox_report(federation.hub)
    assert (check.report.accepted, check.needed, check.status) == (1, 2, 1)
    assert inbox_report(federation.hub, RoundOverrides(min_sites=1)).status == 0
    federation.carry("site-b")
    assert inbox_report(federation.hub).status == 0
    bad = federation.hub / "inbox" / "fed-r0000-site-c.safetensors"
    shutil.copy(federation.bundles["site-a"], bad)
    check = inbox_report(federation.hub)
    assert (check.report.rejected, check.status) == (1, 3)


def test_hub_init_config_is_built_in_the_hub_kit() -> None:
    with pytest.raises(UsageError) as err:
        federation_config(InitOptions(hub=HubPolicy(), federation="f", model="logreg"))
    assert err.value.code is Code.BAD_CONFIG
    assert err.value.message == "missing options --classes, --input-shape"
    config = federation_config(
        InitOptions(
            hub=HubPolicy(),
            federation="f",
            model="logreg",
            classes=("a", "b"),
            input_shape=(4,),
            schedule="periodic:3",
            local_epochs=(2,),
        )
    )
    assert (config.classes, config.input_shape, config.schedule.rounds) == (("a", "b"), (4,), 3)
    assert config.plan.local_epochs == 2
