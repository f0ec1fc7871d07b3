"""Latency lookup tables: block plans, a real build on ONNX Runtime, CSV round trip, resume after an
interruption, failure rows, the ``slimda profile --bank`` command, and ``timing_blocks()`` of every backbone."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import randomise_batchnorm
from slimda.backbones import list_backbones
from slimda.data.preprocessing import Preprocessing
from slimda.errors import SlimdaError
from slimda.latency.build import build_table, plan_entries, reference_config
from slimda.latency.fit import GroupModel, fit_correction
from slimda.latency.noise import RoundNoise
from slimda.latency.plan import plan_for
from slimda.latency.table import (
    LATER_COLUMNS,
    TABLE_COLUMNS,
    LatencyTable,
    load_table,
    normalise_row,
    table_path,
)
from slimda.latency.validate import validate_table
from slimda.model.bank import BankMeta, ModelBank, save_bank
from slimda.profilers import measurement
from slimda.profilers.measurement import Measurement, MeasureOptions
from slimda.profilers.stats import LatencyStats

FAST = MeasureOptions(threads=1, warmup=1, min_runs=3, min_time_s=0.0, max_time_s=5.0)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Forward passes of the larger backbones crawl with two threads on a busy two-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------- timing_blocks()

@pytest.mark.parametrize("arch", list_backbones())
def test_blocks_compose_to_forward(arch):
    channels = 1 if arch == "digits-cnn" else 3
    bank = ModelBank(arch, 10, channels).eval()
    randomise_batchnorm(bank)
    x = torch.randn(2, channels, 32, 32, generator=torch.Generator().manual_seed(0))
    for config in (bank.space.largest(), bank.space.sample(random.Random(3))):
        bank.set_config(config)
        net = bank.extract(config).eval()
        for backbone in (bank.backbone, net.backbone):  # the slimmable bank and the static extraction
            y = x
            with torch.no_grad():
                for _name, block in backbone.timing_blocks():
                    y = block(y)
                assert torch.allclose(torch.flatten(y, 1), backbone(x), atol=1e-5)
        names = [n for n, _ in net.backbone.timing_blocks()]
        assert len(names) == len(set(names)) >= 4


# ------------------------------------------------------------------------------------------------- plans

def test_plan_keys_name_absolute_shapes():
    bank = ModelBank("digits-cnn", 10, 1)
    plan = plan_for(bank, (28, 28))
    config = bank.space.config({"stem": 8, "block1.mid": 16, "block1": 24, "block2.mid": 32, "block2": 40,
                                "block3.mid": 64, "block3": 96})
    keys = plan.keys(config)
    assert [s.name for s in plan.slots] == ["stem", "blocks.0", "blocks.1", "blocks.2", "pool", "head"]
    assert keys[0] == "digits-cnn.sequential(3)|in=1|mid=8|out=8|s=1|hw=28x28"
    assert keys[1] == "digits-cnn.digitsblock(3,3)|in=8|mid=16|out=24|s=2|hw=28x28"
    assert keys[3] == "digits-cnn.digitsblock(3,3)|in=40|mid=64|out=96|s=2|hw=7x7"
    assert keys[5] == "digits-cnn.linear|in=96|mid=96|out=10|s=1|hw=1x1"


def test_resnet_blocks_with_the_same_shapes_share_a_key():
    bank = ModelBank("resnet18", 10, 3)
    plan = plan_for(bank, (64, 64))
    keys = dict(zip((s.name for s in plan.slots), plan.keys(bank.space.uniform(0.5))))
    assert keys["layer1.0"] == keys["layer1.1"]
    assert keys["layer2.0"] != keys["layer2.1"]  # the first block of a stage downsamples
    assert "|s=2|hw=16x16" in keys["layer2.0"] and "basicblock(3,3,1)" in keys["layer2.0"]


def test_correction_recovers_a_linear_law():
    sums = [1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0]
    fit = fit_correction(sums, [0.0] * len(sums), [2 * s + 0.5 for s in sums], terms="sum")
    assert fit.a == pytest.approx(2.0) and fit.b == pytest.approx(0.5) and fit.c == 0.0
    assert fit.loo_error == pytest.approx(0.0, abs=1e-9)
    weights = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0]
    auto = fit_correction(sums, weights, [s + 0.2 * w + 0.1 for s, w in zip(sums, weights)])
    assert auto.terms == "sum+weights" and auto.c == pytest.approx(0.2)


def test_correction_finds_where_the_weights_spill_out_of_the_cache():
    rng = np.random.default_rng(0)
    weights = rng.uniform(1.0, 40.0, size=40)
    sums = 0.1 * weights + rng.uniform(0.5, 2.0, size=40)
    measured = 0.9 * sums + 0.2 + 0.05 * weights + 0.15 * np.maximum(weights - 12.0, 0.0)  # spills above 12 MB
    fit = fit_correction(sums, weights, measured)
    assert fit.terms == "sum+weights+spill" and fit.loo_error < 0.01
    assert 8.0 < fit.knee_mb < 16.0 and fit.d > 0.1
    assert fit(sums[0], weights[0]) == pytest.approx(measured[0], rel=0.02)
    plain = fit_correction(sums, weights, measured, terms="sum+weights")
    assert plain.d == 0.0 and plain.loo_error > 3 * fit.loo_error
    assert fit_correction(sums[:10], weights[:10], measured[:10]).terms != "sum+weights+spill"  # too few points


def test_correction_learns_a_block_that_costs_more_alone_than_in_the_network():
    rng = np.random.default_rng(2)
    slots = rng.uniform(0.05, 0.2, size=(40, 4))
    slots[:, 0] *= rng.choice([1.0, 3.0], size=40)  # the first slot runs 3x slower alone for some widths
    measured = 0.8 * slots.sum(1) + 0.02 - 0.5 * slots[:, 0]
    fit = fit_correction(slots.sum(1), np.zeros(40), measured, slot_ms=slots)
    assert fit.terms.endswith("+slots") and len(fit.slot_coef) == 4 and fit.loo_error < 0.01
    assert fit(slots[3].sum(), 0.0, slots[3]) == pytest.approx(measured[3], rel=0.01)
    with pytest.raises(ValueError, match="4 slot terms"):
        fit(slots[3].sum(), 0.0)
    plain = 0.8 * slots.sum(1) + 0.02
    assert fit_correction(slots.sum(1), np.zeros(40), plain, slot_ms=slots).slot_coef == ()  # nothing to gain
    assert fit_correction(slots[:10].sum(1), np.zeros(10), measured[:10], slot_ms=slots[:10]).slot_coef == ()


def test_group_model_finds_the_channel_blocks_a_kernel_works_in():
    rng = np.random.default_rng(1)
    channels = [tuple(int(c) for c in rng.choice(np.arange(4, 68, 4), size=3)) for _ in range(40)]

    def stepped(c):  # the kernel runs mid and out channels in blocks of 16
        cin, mid, cout = c[0], -(-c[1] // 16) * 16, -(-c[2] // 16) * 16
        return 0.01 + 1e-5 * cin * mid + 1e-4 * mid * cout

    model = GroupModel(channels, [stepped(c) for c in channels])
    assert model.pads == (1, 16, 16) and model.loo_error < 1e-6
    assert model.predict((20, 20, 36)) == pytest.approx(stepped((20, 20, 36)), rel=1e-3)
    smooth = GroupModel(channels, [0.01 + 1e-4 * c[1] * c[2] + 1e-5 * c[0] for c in channels])
    assert smooth.pads == (1, 1, 1)
    assert GroupModel(channels[:10], [stepped(c) for c in channels[:10]]).pads == (1, 1, 1)  # too few to choose


def test_round_noise_is_the_share_of_networks_that_repeat_within_ten_percent():
    quiet = RoundNoise.of([[1.0, 1.02, 0.99], [2.0, 2.1, 1.95], [5.0]])  # a network timed once says nothing
    assert quiet.networks == 2 and quiet.repeatable == 1.0 and not quiet.noisy and quiet.advice("d") == ""
    assert quiet.spread == pytest.approx(np.median([1.02 / 0.99 - 1, 2.1 / 1.95 - 1]))
    noisy = RoundNoise.of([[1.0, 1.3, 1.0], [2.0, 2.0, 2.05], [1.0, 0.85, 1.0], [3.0, 3.0, 3.0]])
    assert noisy.repeatable == 0.5 and noisy.noisy
    assert "50 % of 4 networks" in noisy.advice("jetson-nano") and "jetson_clocks" in noisy.advice("jetson-nano")
    assert RoundNoise.of([[1.0]]).networks == 0 and not RoundNoise.of([]).noisy


# ---------------------------------------------------------------------------------------- a real build

@pytest.fixture(scope="module")
def bank():
    return ModelBank("digits-cnn", 10, 1).eval()


@pytest.fixture(scope="module")
def built(bank, tmp_path_factory):
    path = tmp_path_factory.mktemp("lut") / "cpu-onnxruntime.csv"
    table = build_table(bank, "cpu-onnxruntime", FAST, path, resolution=(28, 28), fit_configs=3, whole_rounds=2,
                        enumerate_limit=8, progress=False, log=lambda _: None)
    return table, path


def test_real_build_is_paired_with_the_reference(built, bank):
    table, path = built
    reference = reference_config(bank.space)
    assert reference == bank.space.uniform(0.5) and table.reference_id == reference.id
    timed = [r for r in table.rows if r["entry_kind"] != "correction"]
    assert all(r["reference_id"] == reference.id and float(r["vs_reference"]) > 0 for r in timed)
    assert table.reference_ms == pytest.approx(np.median([float(r["reference_ms"]) for r in timed]))
    block = next(r for r in timed if r["entry_kind"] == "block")
    assert table.block_ms[block["entry_key"]] == pytest.approx(float(block["vs_reference"]) * table.reference_ms)
    assert 0.5 < table.whole_ms[reference.id] / table.reference_ms < 2  # the reference against itself
    assert table.summary()["reference"] == reference.id


def test_a_paired_table_reads_latency_as_ratio_times_the_reference():
    plan = plan_for(ModelBank("digits-cnn", 10, 1), (16, 16))
    base = {"arch": "digits-cnn", "net_input_shape": plan.input_text, "num_classes": 10, "status": "ok",
            "device": "cpu-onnxruntime", "reference_id": "r"}
    rows = [{**base, "entry_kind": "block", "entry_key": "k", "latency_ms_p50": 9.0, "vs_reference": 0.5,
             "reference_ms": ref} for ref in (1.0, 3.0, 2.0)]  # the machine sped up and slowed down
    rows.append({**base, "entry_kind": "block", "entry_key": "raw", "latency_ms_p50": 7.0})  # an unpaired row
    table = LatencyTable(rows, plan)
    assert table.reference_ms == 2.0 and table.reference_id == "r"
    assert table.block_ms == {"k": pytest.approx(1.0), "raw": 7.0}


def test_a_table_written_before_paired_timing_still_loads(built, bank, tmp_path):
    table, _ = built
    older = [c for c in TABLE_COLUMNS if c not in LATER_COLUMNS]
    path = tmp_path / "old.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=older, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(r for r in table.rows if r["entry_kind"] != "correction")
    old = LatencyTable.load(path)
    assert old.reference_ms is None and old.reference_id == ""
    row = next(r for r in table.rows if r["entry_kind"] == "block")
    assert old.block_ms[row["entry_key"]] == pytest.approx(float(row["latency_ms_p50"]))  # raw medians
    assert old.predict(bank.space.largest()) > 0


def test_validation_is_paired_like_its_table(built, bank, tmp_path):
    table, _ = built
    report = validate_table(table, bank, "cpu-onnxruntime", FAST, 3, tmp_path / "val.csv", rounds=2, progress=False)
    assert report.paired and report.count == 3 and report.drift > 0
    assert 0 <= report.within_10 <= 1 and 0 <= report.within_10_raw <= 1
    assert "paired with the table's reference" in report.text()
    for row in report.rows:
        assert float(row["measured_ms"]) > 0 and float(row["measured_raw_ms"]) > 0
        assert len(row["round_ms"].split()) == len(row["round_raw_ms"].split()) == 2
    unpaired = LatencyTable([normalise_row({**r, "vs_reference": "", "reference_ms": "", "reference_id": ""})
                             for r in table.rows], table.plan)
    report = validate_table(unpaired, bank, "cpu-onnxruntime", FAST, 2, rounds=1, progress=False)
    assert not report.paired and report.within_10 == report.within_10_raw
    assert all(r["measured_ms"] == r["measured_raw_ms"] for r in report.rows)


def test_real_build_predicts_every_configuration(built, bank):
    table, _ = built
    space = bank.space
    assert len(table.uniform_ids) == 7 and len(table.fit_ids) == 3
    assert table.noise.networks == 10  # every whole network was timed twice
    assert 0 <= table.summary()["repeatable_pct"] <= 100
    for config in space.sample_many(20, seed=99):
        pred = table.explain(config)
        assert pred.latency_ms > 0 and pred.block_sum_ms > 0
        assert pred.source in ("blocks", "whole")
    for ratio in space.ratios:  # uniform widths are answered by their own whole-network entries
        config = space.uniform(ratio)
        pred = table.explain(config)
        assert pred.source == "uniform" and pred.latency_ms == table.whole_ms[config.id]
    assert table.predict(space.largest()) > table.predict(space.smallest())


def test_the_correction_sees_the_block_regression_error(built, bank):
    """A fit network's own keys (timed for it alone, in a slot whose keys were not all timed) enter its
    block sum as the regression predicts them without them, the sum a held-out network would have."""
    table, _ = built
    held = table.held_out_blocks()
    assert set(held) == set(table.whole_ms)
    keys = {i: table.plan.keys(table.config(i)) for i in held}
    changed = 0
    for config_id, (slots, mb) in held.items():
        total = sum(slots)
        exact, exact_mb, _ = table.block_sum(table.config(config_id))
        assert mb == pytest.approx(exact_mb)
        own = [k for slot, k in zip(table.plan.slots, keys[config_id]) if not table._all_keys_timed(slot)
               and sum(k in ks for ks in keys.values()) == 1]
        assert (total != pytest.approx(exact, rel=1e-9)) == bool(own)
        changed += bool(own)
    assert changed >= 3  # every fit network has keys of its own
    assert table.correction.points == len(held)


def test_block_weights_add_up_to_the_whole_network(built, bank):
    table, _ = built
    for config in bank.space.sample_many(5, seed=5):  # unseen keys too: weights are exact
        _, weights_mb, _ = table.block_sum(config)
        params = sum(p.numel() for p in bank.extract(config).parameters())
        assert weights_mb == pytest.approx(params * 4 / 1e6, rel=1e-3)


def test_table_csv_round_trip(built, bank, tmp_path):
    table, path = built
    with path.open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == TABLE_COLUMNS
        rows = list(reader)
    kinds = {r["entry_kind"] for r in rows}
    assert kinds == {"block", "uniform", "whole", "correction"}
    assert all(r["status"] == "ok" and float(r["latency_ms_p50"]) > 0 for r in rows if r["entry_kind"] != "correction")
    assert sum(r["entry_kind"] == "whole" for r in rows) == 3 * 2  # two rounds per fit-set network
    loaded = LatencyTable.load(path)
    assert loaded.correction.a == pytest.approx(table.correction.a, rel=1e-4)
    copy = tmp_path / "copy.csv"
    loaded.save(copy)
    again = LatencyTable.load(copy)
    for config in bank.space.sample_many(10, seed=7):
        assert again.predict(config) == pytest.approx(table.predict(config), rel=1e-4)


def test_stored_slot_terms_are_applied_and_refitted_when_they_do_not_fit_the_plan(built, bank):
    table, _ = built
    n = len(table.plan.slots)
    rows = [r for r in table.rows if r["entry_kind"] != "correction"]
    stored = {**next(r for r in table.rows if r["entry_kind"] == "correction"), "entry_key": "sum+slots",
              "coef_a": 1.0, "coef_b_ms": 0.0, "coef_c_ms_per_mb": 0.0, "coef_d_ms_per_mb_spilled": 0.0,
              "coef_slots": " ".join(["0.5"] + ["0"] * (n - 1))}
    with_slots = LatencyTable([*rows, stored])
    config = next(c for c in bank.space.sample_many(20, seed=5) if c.id not in table.whole_ms)
    first = with_slots.blocks(config)[0][0]
    assert with_slots.correction.slot_coef[0] == 0.5
    assert with_slots.predict(config) == pytest.approx(with_slots.block_sum(config)[0] + 0.5 * first)
    other_plan = LatencyTable([*rows, {**stored, "coef_slots": "0.5 0.5"}])  # written for other slots: refitted
    assert other_plan.correction.terms != "sum+slots" and other_plan.correction.points == len(table.whole_ms)


# -------------------------------------------------------------------------- resume and failures (fake timer)

def fake_measurement(onnx_path, device, options=None) -> Measurement:
    """A deterministic 'latency' growing with the model's size, without running it."""
    ms = 0.01 + Path(onnx_path).stat().st_size / 1e6
    return Measurement(device="cpu-onnxruntime", runtime="onnxruntime", runtime_version="fake", precision="fp32",
                       threads=1, batch=1, input_shape="1", host="test", stats=LatencyStats(p50=ms, mean=ms, runs=1))


@pytest.fixture
def small_bank():
    return ModelBank("digits-cnn", 10, 1, ratios=(0.5, 1.0)).eval()


def _build(small_bank, path, paired=False, **kw):
    """A build timed by ``fake_measurement`` (patched over ``measure``): unpaired unless asked."""
    return build_table(small_bank, "cpu-onnxruntime", FAST, path, resolution=(16, 16), fit_configs=4,
                       whole_rounds=2, progress=False, log=lambda _: None, paired=paired, **kw)


def test_interrupted_build_resumes_where_it_stopped(small_bank, tmp_path, monkeypatch):
    path = tmp_path / "lut.csv"
    total = len(plan_entries(small_bank.space, plan_for(small_bank, (16, 16)), 4, 0, 64, 2))
    calls: list[str] = []

    def interrupted(onnx_path, device, options=None):
        if len(calls) == 7:
            raise KeyboardInterrupt
        calls.append(Path(onnx_path).name)
        return fake_measurement(onnx_path, device, options)

    monkeypatch.setattr(measurement, "measure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _build(small_bank, path)
    with path.open() as f:
        assert len(list(csv.DictReader(f))) == 7  # every finished entry was flushed, nothing else
    with path.open("a") as f:
        f.write("block,half-written-ro")  # a build killed in the middle of a write

    calls.clear()
    monkeypatch.setattr(measurement, "measure", lambda *a, **k: calls.append("x") or fake_measurement(*a, **k))
    table = _build(small_bank, path)
    assert len(calls) == total - 7
    rows = table.rows
    assert len(rows) == total + 1  # plus the correction
    keys = [(r["entry_kind"], r["entry_key"]) for r in rows if r["entry_kind"] == "block"]
    assert len(keys) == len(set(keys))

    calls.clear()
    _build(small_bank, path)  # complete: nothing left to measure
    assert calls == []


def test_failing_entry_becomes_a_failure_row(small_bank, tmp_path, monkeypatch):
    path = tmp_path / "lut.csv"
    plan = plan_for(small_bank, (16, 16))
    config = small_bank.space.uniform(0.5)
    bad_key = plan.keys(config)[2]  # the second digits block at half width
    bad_slug = "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in bad_key)

    def failing(onnx_path, device, options=None):
        if bad_slug in Path(onnx_path).name:
            raise RuntimeError("kernel not supported on this device")
        return fake_measurement(onnx_path, device, options)

    monkeypatch.setattr(measurement, "measure", failing)
    table = _build(small_bank, path)
    failed = [r for r in table.rows if r["status"] == "failed"]
    assert [r["entry_key"] for r in failed] == [bad_key]
    assert "kernel not supported" in failed[0]["error"] and failed[0]["latency_ms_p50"] == ""
    assert bad_key not in table.block_ms
    pred = table.explain(small_bank.space.config({**small_bank.space.largest().as_dict(), "block1": 16,
                                                  "block2.mid": 32, "block2": 32}))
    assert pred.latency_ms > 0 and pred.fallback_blocks >= 1  # the failed key is predicted, not used

    calls = []
    monkeypatch.setattr(measurement, "measure", lambda *a, **k: calls.append(a[0]) or fake_measurement(*a, **k))
    retried = _build(small_bank, path, retry_failed=True)
    assert len(calls) == 1 and bad_key in retried.block_ms


def test_a_build_where_every_entry_fails_says_so(small_bank, tmp_path, monkeypatch):
    def broken(onnx_path, device, options=None):
        raise RuntimeError("the runtime crashed")

    monkeypatch.setattr(measurement, "measure", broken)
    with pytest.raises(SlimdaError, match="every entry .* failed .*the runtime crashed.*--retry-failed"):
        _build(small_bank, tmp_path / "lut.csv")
    assert all(r["status"] == "failed" for r in csv.DictReader((tmp_path / "lut.csv").open()))


def test_a_table_of_other_settings_is_not_resumed(small_bank, tmp_path, monkeypatch):
    path = tmp_path / "lut.csv"
    monkeypatch.setattr(measurement, "measure", fake_measurement)
    _build(small_bank, path)
    with pytest.raises(SlimdaError, match="other settings"):
        build_table(small_bank, "cpu-onnxruntime", FAST, path, resolution=(20, 20), fit_configs=4,
                    progress=False, log=lambda _: None, paired=False)
    with pytest.raises(SlimdaError, match="timed unpaired .* add --unpaired"):  # paired and unpaired never mix
        _build(small_bank, path, paired=True)


# ------------------------------------------------------------------------------------------------ the CLI

def test_profile_bank_command_end_to_end(tmp_path, capsys, monkeypatch):
    from slimda.cli import main

    run = tmp_path / "run"
    prep = Preprocessing(size=(28, 28), channels=1, mean=(0.5,), std=(0.5,))
    save_bank(ModelBank("digits-cnn", 10, 1), run / "bank.pt", BankMeta(tuple(str(i) for i in range(10)), prep))
    with pytest.raises(SlimdaError, match="slimda-profile --device cpu-onnxruntime --bank"):
        load_table(run, "cpu-onnxruntime")
    assert main(["profile", "--device", "cpu-onnxruntime", "--bank", str(run), "--rounds", "0"]) == 2
    assert "--rounds must be at least 1" in capsys.readouterr().err
    code = main(["profile", "--device", "cpu-onnxruntime", "--bank", str(run), "--validate", "3",
                 "--fit-configs", "3", "--rounds", "2", "--warmup", "1", "--min-runs", "3", "--min-time", "0"])
    assert code == 0
    captured = capsys.readouterr()
    assert "within ±10 %" in captured.out and "Spearman" in captured.out
    assert "repeatability:" in captured.err
    table = load_table(run, "cpu-onnxruntime")
    assert table_path(run, "cpu-onnxruntime") == run / "latency" / "cpu-onnxruntime.csv"
    assert table.input_shape == (1, 1, 28, 28) and table.arch == "digits-cnn"
    # a caller that holds the bank loads the table with that bank's plan: no bank is rebuilt to trace one
    from slimda.latency import table as table_module
    from slimda.model.bank import load_bank

    bank, _ = load_bank(run)

    def rebuild(*args):
        raise AssertionError("the table rebuilt a bank from its description")

    monkeypatch.setattr(table_module, "plan_from_description", rebuild)
    held = load_table(run, "cpu-onnxruntime", bank=bank)
    assert held.plan == table.plan
    assert [held.predict(c) for c in bank.space.sample_many(5, 0)] == [table.predict(c) for c in
                                                                       bank.space.sample_many(5, 0)]
    with (run / "latency" / "cpu-onnxruntime-validation.csv").open() as f:
        reader = csv.DictReader(f)
        assert (reader.fieldnames or [])[:3] == ["config_id", "predicted_ms", "measured_ms"]
        rows = list(reader)
    assert len(rows) == 3 and all(float(r["measured_ms"]) > 0 and float(r["predicted_ms"]) > 0 for r in rows)
    assert all(r["rounds"] == "2" for r in rows)
    assert not {r["config_id"] for r in rows} & (table.fit_ids | table.uniform_ids)


def test_profile_arch_needs_out(capsys):
    from slimda.cli import main

    assert main(["profile", "--device", "cpu-onnxruntime", "--arch", "digits-cnn"]) == 2
    assert "--out" in capsys.readouterr().err
