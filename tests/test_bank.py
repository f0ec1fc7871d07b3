"""The model bank: extraction is exact, exports to ONNX, matches torchvision at full width."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision

from conftest import randomise_batchnorm
from slimda.backbones import list_backbones
from slimda.data.preprocessing import Preprocessing
from slimda.errors import ConfigError, SlimdaError
from slimda.export.onnx_export import PARITY_TOLERANCE, export_onnx, onnx_opset, parity_error
from slimda.model.bank import BankMeta, ModelBank, load_bank, save_bank
from slimda.model.bn import recalibrate
from slimda.model.cost import count_flops, count_params
from slimda.model.heads import HEADS
from slimda.model.ops import SlimConv2d, SlimOp, contains_slim_ops, set_widths, to_static

# Small inputs keep the ImageNet backbones fast (the last stage sees a 1×1 map; shapes are what matter).
INPUT = {"digits-cnn": (1, 28), "resnet18": (3, 32), "resnet50": (3, 32), "mobilenet_v2": (3, 32)}
RANDOM_CONFIGS = 20


def distinct_inputs(channels: int, size: int, count: int = 2, seed: int = 1) -> torch.Tensor:
    """Images with different statistics (pooled features of plain noise images are nearly equal)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(count, channels, size, size, generator=gen)
    scale = torch.linspace(1.0, 2.5, count).view(count, 1, 1, 1)
    offset = torch.linspace(0.0, 0.7, count).view(count, 1, 1, 1)
    return noise * scale + offset


def make_bank(arch: str, num_classes: int = 10) -> ModelBank:
    torch.manual_seed(0)
    channels, size = INPUT[arch]
    bank = ModelBank(arch, num_classes, in_channels=channels)
    randomise_batchnorm(bank)
    # Statistics from data, so that signals neither vanish nor saturate through the layers.
    recalibrate(bank, [distinct_inputs(channels, size, count=32, seed=2)])
    return bank.eval()


@pytest.mark.parametrize("arch", list_backbones())
def test_extraction_is_exact_and_exports_to_onnx(arch, tmp_path):
    bank = make_bank(arch)
    channels, size = INPUT[arch]
    x = distinct_inputs(channels, size)
    space = bank.space
    calibration = distinct_inputs(channels, size, count=32, seed=2)
    configs = [space.largest(), space.smallest(), *space.sample_many(RANDOM_CONFIGS, seed=7)]
    assert len(configs) == RANDOM_CONFIGS + 2
    for i, config in enumerate(configs):
        bank.set_config(config)
        # As before any evaluation: this sub-network's own statistics (a slice of the full network's
        # would let deep configurations collapse to a constant output, making parity trivial).
        recalibrate(bank, [calibration])
        net = bank.extract(config)
        assert not contains_slim_ops(net)
        with torch.no_grad():
            expected = bank.scores(x, "ca")
            got = net(x)
        assert bank.config == config
        assert (expected[0] - expected[1]).abs().max() > 1e-3, "outputs must depend on the input"
        assert (got - expected).abs().max().item() <= 1e-5, config.id
        for opset in (13, 18):
            path = export_onnx(net, tmp_path / f"{i}-{opset}.onnx", (1, channels, size, size), opset,
                               exporter="torchscript")
            assert onnx_opset(path) == opset
            assert parity_error(net, path, x[:1]) <= PARITY_TOLERANCE, (config.id, opset)


@pytest.mark.parametrize("arch", list_backbones())
def test_dynamo_exporter_at_current_opset(arch, tmp_path):
    bank = make_bank(arch)
    channels, size = INPUT[arch]
    x = torch.randn(1, channels, size, size)
    for config in (bank.space.largest(), bank.space.smallest()):
        net = bank.extract(config, head="cst")
        path = export_onnx(net, tmp_path / f"{config.id}.onnx", (1, channels, size, size), 18, exporter="dynamo")
        assert onnx_opset(path) >= 18
        assert not list(tmp_path.glob("*.data")), "weights must stay inside the .onnx file"
        assert parity_error(net, path, x) <= PARITY_TOLERANCE


def test_every_head_extracts_exactly():
    bank = make_bank("digits-cnn")
    x = torch.randn(3, 1, 28, 28)
    config = bank.space.sample_many(1, seed=2)[0]
    bank.set_config(config)
    for head in HEADS:
        net = bank.extract(head=head)
        with torch.no_grad():
            assert torch.allclose(net(x), bank.scores(x, head), atol=1e-5), head
            assert net(x).shape == (3, 10)
    with pytest.raises(ConfigError, match="unknown head 'cx'"):
        bank.extract(head="cx")


@pytest.mark.parametrize("arch, factory", [
    ("resnet18", torchvision.models.resnet18),
    ("resnet50", torchvision.models.resnet50),
    ("mobilenet_v2", torchvision.models.mobilenet_v2),
])
def test_full_width_equals_torchvision(arch, factory):
    torch.manual_seed(0)
    reference = factory()  # random weights: nothing is downloaded
    randomise_batchnorm(reference, seed=3)
    bank = ModelBank(arch, 1000)
    bank.backbone.load_torchvision_state_dict(reference.state_dict())
    reference.eval()
    bank.eval()
    if arch == "mobilenet_v2":
        reference.classifier = torch.nn.Identity()
    else:
        reference.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(bank.backbone(x), reference(x))


def test_torchvision_state_dict_of_another_arch_is_refused():
    bank = ModelBank("resnet18", 10)
    with pytest.raises(ConfigError, match="does not fit resnet18"):
        bank.backbone.load_torchvision_state_dict(torchvision.models.resnet50().state_dict())


@pytest.mark.parametrize("arch, factory", [
    ("resnet18", torchvision.models.resnet18),
    ("resnet50", torchvision.models.resnet50),
    ("mobilenet_v2", torchvision.models.mobilenet_v2),
])
def test_full_width_flops_and_params_equal_torchvision(arch, factory):
    bank = ModelBank(arch, 1000).eval()
    net = bank.extract(bank.space.largest(), head="ca")
    reference = factory().eval()
    shape = (1, 3, 224, 224)
    assert count_flops(net, shape) == count_flops(reference, shape)
    assert count_params(net) == count_params(reference)  # Ca is torchvision's fc exactly; Cs/Ct are not kept
    joint = bank.extract(bank.space.largest(), head="cst")  # keeps the whole 2K-way head: K more rows
    rows = bank.head_st.weight.shape[0] // 2
    assert count_params(joint) == count_params(reference) + rows * bank.head_st.weight.shape[1] + rows


@pytest.mark.parametrize("arch", list_backbones())
def test_cost_grows_with_uniform_width(arch):
    bank = ModelBank(arch, 10, INPUT[arch][0]).eval()
    channels, size = INPUT[arch]
    flops, params = [], []
    for ratio in (0.25, 0.5, 0.75, 1.0):
        net = bank.extract(bank.space.uniform(ratio))
        flops.append(count_flops(net, (1, channels, size, size)))
        params.append(count_params(net))
    assert flops == sorted(flops) and len(set(flops)) == 4
    assert params == sorted(params) and len(set(params)) == 4


def test_grouped_conv_keeps_group_width():
    conv = SlimConv2d(16, 16, 3, 1, 1, groups=4, in_site="s", out_site="s")  # 4 channels per group
    x = torch.randn(1, 16, 8, 8)
    set_widths(conv, {"s": 8})
    static = to_static(conv)
    assert isinstance(static, torch.nn.Conv2d) and not isinstance(static, SlimOp)
    assert static.groups == 2 and static.weight.shape == (8, 4, 3, 3)
    assert torch.allclose(static(x[:, :8]), conv(x[:, :8]))
    with pytest.raises(ValueError, match="same site"):
        SlimConv2d(16, 32, 3, groups=4, in_site="a", out_site="b")


def test_extract_leaves_the_bank_untouched():
    bank = make_bank("digits-cnn")
    before = {k: v.clone() for k, v in bank.state_dict().items()}
    config = bank.space.smallest()
    net = bank.extract(config)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    assert bank.config == bank.space.largest()
    for k, v in bank.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_set_config_rejects_other_arch():
    bank = make_bank("digits-cnn")
    other = ModelBank("resnet18", 10).space.largest()
    with pytest.raises(ConfigError, match="is for 'resnet18'"):
        bank.set_config(other)


def test_save_and_load_round_trip(tmp_path):
    bank = make_bank("digits-cnn")
    path = tmp_path / "run" / "bank.pt"
    save_bank(bank, path, BankMeta(tuple(str(i) for i in range(10)), Preprocessing((28, 28), 1, (0.5,), (0.5,))))
    assert [p.name for p in path.parent.iterdir()] == ["bank.pt"]  # no temporary file left
    loaded, meta = load_bank(path.parent)
    assert meta.class_names[3] == "3" and meta.preprocessing.size == (28, 28) and meta.test_head == "ca"
    x = torch.randn(2, 1, 28, 28)
    config = bank.space.sample_many(1, seed=4)[0]
    bank.set_config(config)
    loaded.set_config(config)
    with torch.no_grad():
        assert torch.equal(bank.scores(x), loaded.scores(x))


class Exploit:
    """Unpickling it creates the file ``marker``: if that file exists, the payload ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_refuses_files_that_are_not_banks(tmp_path):
    with pytest.raises(SlimdaError, match="no model bank at"):
        load_bank(tmp_path / "missing")
    evil, marker = tmp_path / "evil.pt", tmp_path / "payload-ran"
    evil.write_bytes(pickle.dumps(Exploit(str(marker))))
    pickle.loads(evil.read_bytes()).close()
    assert marker.exists()  # the payload does run when unpickled plainly
    marker.unlink()
    with pytest.raises(SlimdaError, match="is not a slimda model bank"):
        load_bank(evil)
    assert not marker.exists()  # load_bank never ran it
    junk = tmp_path / "junk.pt"
    torch.save({"state_dict": {}}, junk)
    with pytest.raises(SlimdaError, match="no 'slimda-bank' header"):
        load_bank(junk)
