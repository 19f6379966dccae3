"""Adapter specs (torch-free) and LoRA layers: parse, targets, forward, merge."""

from __future__ import annotations

import pytest

from flsilo.format.tensorfile import Header, build_header
from flsilo.format.tensorsets import AdapterSpec, expected_specs, frozen_tensors, parse_adapters


def test_parse_adapters_reads_rank_alpha_and_globs_to_the_end():
    assert parse_adapters("lora:r=8") == AdapterSpec("lora", 8, 8.0, ())
    spec = parse_adapters("lora:r=4,alpha=16,targets=layer4.*.conv1,fc1")
    assert spec == AdapterSpec("lora", 4, 16.0, ("layer4.*.conv1", "fc1")) and spec.scale == 4.0
    assert parse_adapters("lora:targets=a,b,r=2") == AdapterSpec("lora", 2, 2.0, ("a", "b"))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("lora", "rank"),
        ("lora:r=0", "positive"),
        ("lora:r=-3", "positive"),
        ("lora:r=8,alpha=0", "positive"),
        ("lora:r=eight", "whole number"),
        ("lora:r=1.5", "whole number"),
        ("lora:r=2,rank=3", "not r=R"),
        ("lora:r=2,r=3", "not r=R"),
        ("lora:r=2,targets=", "empty"),
        ("ia3:r=2", "not one of lora"),
    ],
)
def test_parse_adapters_refuses_with_the_reason(text, why):
    with pytest.raises(ValueError, match=why):
        parse_adapters(text)


def test_adapters_freeze_all_but_b_and_the_head():
    names = ["1.weight", "1.lora_A.weight", "1.lora_B.weight", "3.weight", "3.bias"]
    head = ("3.weight", "3.bias")
    assert frozen_tensors(names, (), "lora:r=2", head) == {"1.weight", "1.lora_A.weight"}
    assert frozen_tensors(names, ("3.*",), "", head) == {"3.weight", "3.bias"}
    specs = {n: ("F32", (2, 2)) for n in names}
    raw, layout = build_header(specs, {})
    header = Header({}, tuple(layout), len(raw) - 8, len(raw) + layout[-1].end)
    got = expected_specs(header, head, "train", (), "ridge", adapters="lora:r=2")
    assert sorted(got) == ["1.lora_B.weight", "3.bias", "3.weight"]
    assert sorted(expected_specs(header, head, "train", (), "ridge")) == sorted(names)


torch = pytest.importorskip("torch")
nn = torch.nn


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.mix = nn.Conv2d(8, 8, 1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.hidden = nn.Linear(8, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise(self.mix(torch.relu(self.stem(x))))
        return self.head(torch.relu(self.hidden(x.mean(dim=(2, 3)))))


def test_default_targets_are_linear_and_1x1_convolutions_but_the_head():
    from flsilo.models.adapters import resolve_targets

    net = _Net()
    assert resolve_targets(net, parse_adapters("lora:r=2"), "head") == ["mix", "hidden"]
    with_kxk = parse_adapters("lora:r=2,targets=stem,mix")
    assert resolve_targets(net, with_kxk, "head") == ["stem", "mix"]
    for glob in ("depthwise", "head", "nothing*"):  # grouped convolution, head, no layer
        with pytest.raises(ValueError, match="matches no linear or convolution layer"):
            resolve_targets(net, parse_adapters(f"lora:r=2,targets={glob}"), "head")


def test_adapters_start_as_the_base_and_merge_into_the_same_function():
    from flsilo.models.adapters import add_adapters, merge

    torch.manual_seed(0)
    net = _Net().eval()
    x = torch.randn(5, 3, 6, 6)
    with torch.no_grad():
        base = net(x)
    targets = add_adapters(net, "lora:r=2,alpha=3,targets=stem,mix,hidden")
    assert targets == ["stem", "mix", "hidden"]
    state = net.state_dict()
    assert state["stem.lora_A.weight"].shape == (2, 3, 3, 3)
    assert state["stem.lora_B.weight"].shape == (8, 2, 1, 1)
    assert state["hidden.lora_A.weight"].shape == (2, 8)
    with torch.no_grad():
        assert torch.equal(net(x), base)  # B is zero
        for name in targets:
            net.get_submodule(name).lora_B.weight.normal_()
        adapted = net(x)
    assert not torch.allclose(adapted, base)
    merge(net)
    assert not any("lora" in n for n in net.state_dict())
    with torch.no_grad():
        assert torch.allclose(net(x), adapted, atol=1e-5)


def test_only_b_gets_gradients_and_deep_copies_keep_their_own_adapters():
    import copy

    from flsilo.models.adapters import add_adapters

    net = _Net()
    add_adapters(net, "lora:r=2")
    twin = copy.deepcopy(net)
    with torch.no_grad():
        twin.hidden.lora_B.weight.fill_(1.0)
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert not torch.allclose(twin(x), net(x))  # the copy's hook uses the copy's B
    assert not net.hidden.lora_A.weight.requires_grad and net.hidden.lora_B.weight.requires_grad


def test_attention_projections_that_are_never_called_are_not_targets():
    from flsilo.models.adapters import resolve_targets

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2)
            self.mlp = nn.Linear(8, 8)
            self.head = nn.Linear(8, 2)

    assert resolve_targets(Block(), parse_adapters("lora:r=2"), "head") == ["mlp"]
