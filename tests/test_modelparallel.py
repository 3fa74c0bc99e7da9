"""Model parallelism over RPC: the split model computes what the whole model computes, pipelining
does not change the update, failures name the stage, and the analysis of recorded events is right."""
import math

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import our_children, run_cli
from labkit import model_parallel as mp
from labkit import results
from labkit.errors import LabError, WorkerError
from labkit.model_parallel import analysis
from labkit.model_parallel import parts as mp_parts
from labkit.model_parallel.config import LAYOUTS
from labkit.model_parallel.stage import BWD, FWD, OPT, STEP
from labkit.model_parallel.tasks import explain
from labkit.train import models

LINEAR_SPLITS = {"lenet5": [7, 9], "mlp": [1, 3, 5, 7, 9]}


def assert_no_children_left():
    leftovers = [p for p in our_children() if p.is_running()
                 and p.status() != psutil.STATUS_ZOMBIE]
    assert not leftovers, f"processes left behind: {[p.cmdline() for p in leftovers]}"


# ---------------------------------------------------------------- splitting, without processes

@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(2, 50), st.integers(2, 6), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_horizontal_split_gives_the_unsplit_layers_outputs_and_input_gradient(n_in, n_out, parts, batch, seed):
    parts = min(parts, n_out)
    torch.manual_seed(seed)
    layer = torch.nn.Linear(n_in, n_out)
    x = torch.randn(batch, n_in, requires_grad=True)
    pieces = mp_parts.split_linear(layer, parts)
    assert [p.out_features for p in pieces] == [len(r) for r in torch.arange(n_out).tensor_split(parts)]
    joined = torch.cat([p(x) for p in pieces], dim=-1)
    whole = layer(x)
    assert torch.allclose(joined, whole, atol=1e-6)
    upstream = torch.randn_like(whole)
    (g_split,) = torch.autograd.grad(joined, x, upstream)
    (g_whole,) = torch.autograd.grad(whole, x, upstream)
    assert torch.allclose(g_split, g_whole, atol=1e-5)


def test_horizontal_split_refuses_what_it_cannot_divide():
    with pytest.raises(LabError, match="divides a Linear layer, got Conv2d"):
        mp_parts.split_linear(torch.nn.Conv2d(1, 2, 3))
    with pytest.raises(LabError, match="cannot divide 3 output neurons into 4 parts"):
        mp_parts.split_linear(torch.nn.Linear(2, 3), 4)


@pytest.mark.parametrize("name", ["lenet5", "mlp", "lenet5_bn"])
def test_vertical_parts_compose_to_the_model_and_merge_back_to_its_state(name):
    model = models.build(name, seed=1).eval()
    x = torch.randn(3, 1, 28, 28)
    for at in range(1, len(model)):
        first = mp_parts.build_part(name, 1, at, False, "stage1").eval()
        second = mp_parts.build_part(name, 1, at, False, "stage2").eval()
        assert torch.equal(second(first(x)), model(x))
        merged = mp_parts.merge_parts(name, at, False, {"stage1": first.state_dict(), "stage2": second.state_dict()})
        assert merged.keys() == model.state_dict().keys()
        assert all(torch.equal(merged[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", list(LINEAR_SPLITS))
def test_horizontal_parts_compose_to_the_model_and_merge_back_to_its_state(name):
    model = models.build(name, seed=2)
    x = torch.randn(4, 1, 28, 28)
    for at in LINEAR_SPLITS[name]:
        parts = {p: mp_parts.build_part(name, 2, at, True, p) for p in ("head", "half1", "half2", "tail")}
        h = parts["head"](x)
        out = parts["tail"](torch.cat([parts["half1"](h), parts["half2"](h)], dim=-1))
        assert torch.allclose(out, model(x), atol=1e-6)
        merged = mp_parts.merge_parts(name, at, True, {p: m.state_dict() for p, m in parts.items()})
        assert all(torch.equal(merged[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- configuration

@pytest.mark.parametrize("fields,message", [
    ({"split": 0}, "split point 0 is invalid for a model of 10 layers; use 1..9"),
    ({"split": 10}, "split point 10 is invalid"),
    ({"horizontal": True, "split": 3}, "layer 3 of this model is not a Linear layer; use split= one of \\[7, 9\\]"),
    ({"micro_batches": 0}, "micro_batches must be at least 1, got 0"),
    ({"batch_size": 30, "micro_batches": 4}, "batch_size 30 cannot be cut into 4 equal micro-batches"),
    ({"nodes": 2}, "needs exactly 3 processes.*got nodes=2"),
    ({"nodes": 4}, "needs exactly 3 processes"),
    ({"placement": "colocated", "nodes": 3}, None),   # the default: colocated makes it 2
    ({"placement": "colocated", "nodes": 4}, "placement='colocated' needs exactly 2 processes, got nodes=4"),
    ({"placement": "together"}, "unknown placement 'together'; choose one of separate, colocated"),
    ({"optimizer": "adam"}, "unknown optimizer 'adam'; choose one of distributed, local, deferred"),
    ({"placement": "colocated", "horizontal": True}, "a horizontal split does not have"),
    ({"fail_stage": 3}, "fail_stage must be 0"),
    ({"fail_mode": "explode"}, "fail_mode must be 'raise', 'crash' or 'hang'"),
    ({"rpc_timeout": 0}, "rpc_timeout must be a positive number of seconds, got 0"),
    ({"model": "vgg"}, "unknown model 'vgg'"),
])
def test_bad_configuration_is_a_clear_error(fields, message):
    if message is None:
        assert mp.MPConfig(**fields).nodes == 2
        return
    with pytest.raises(LabError, match=message):
        mp.MPConfig(**fields)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_the_light_layouts_match_the_built_models(name):
    assert mp_parts.layout(models.build(name)) == LAYOUTS[name]


def test_default_config_is_the_reference_workload():
    cfg = mp.MPConfig()
    assert (cfg.model, cfg.batch_size, cfg.epochs, cfg.lr, cfg.momentum, cfg.seed) == ("lenet5", 32, 2, 0.01, 0.9, 0)
    assert (cfg.split, cfg.micro_batches, cfg.horizontal, cfg.nodes) == (None, 1, False, 3)
    assert cfg.at == models.build("lenet5").split


def test_cli_bad_input_is_one_line():
    proc = run_cli("run", "mp", "--no-save", "--micro-batches", "5")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: batch_size 32 cannot be cut into 5 equal micro-batches; choose a batch "
                                   "size divisible by 5 (e.g. 30).")


@pytest.mark.slow
def test_cli_runs_a_short_model_parallel_job_and_records_it():
    proc = run_cli("run", "mp", "--epochs", "1", "--train-subset", "320", "--micro-batches", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/1" in proc.stdout and "idle w1" in proc.stdout
    table = results.load("mp")
    assert len(table) == 1 and table.micro_batches.iloc[0] == 2 and table.steps.iloc[0] == 10


# ---------------------------------------------------------------- analysis of recorded events

def fake_events(schedule, steps_at):
    """Tensors as stages record them, from (worker, seq, phase, start, end, in, out) tuples."""
    out = {}
    for w, *rest in schedule + [("master", seq, STEP, a, b, 0, 0) for seq, a, b in steps_at]:
        out.setdefault(w, []).append(rest)
    return {w: torch.tensor(rows, dtype=torch.float64) for w, rows in out.items()}


def test_summary_of_a_known_two_micro_batch_step():
    # one step [0, 10]: w1 computes fwd 0 [1,2], fwd 1 [2,3]; w2 fwd 0 [2.5,3.5], fwd 1 [3.5,4.5];
    # master backward call from 5; w2 bwd 1 [5.5,6.5], bwd 0 [6.5,7.5]; w1 bwd 1 [7,8], bwd 0 [8,9]
    schedule = [("worker1", 0, FWD, 1, 2, 100, 40), ("worker1", 1, FWD, 2, 3, 100, 40),
                ("worker2", 0, FWD, 2.5, 3.5, 40, 8), ("worker2", 1, FWD, 3.5, 4.5, 40, 8),
                ("master", 0, BWD, 5, 9.5, 0, 0), ("master", 0, OPT, 9.5, 10, 0, 0),
                ("worker2", 1, BWD, 5.5, 6.5, 0, 0), ("worker2", 0, BWD, 6.5, 7.5, 0, 0),
                ("worker1", 1, BWD, 7, 8, 0, 0), ("worker1", 0, BWD, 8, 9, 0, 0)]
    frame = analysis.events_frame(fake_events(schedule, [(0, 0, 10)]))
    assert set(frame.step) == {0} and sorted(frame[frame.worker == "worker1"].micro) == [0, 0, 1, 1]
    s = analysis.summarize(frame, wall=10)
    assert s["worker1_compute_s"] == 4 and s["worker2_compute_s"] == 4
    assert s["worker1_idle_frac"] == pytest.approx(0.6)
    # w1: fwd 0 waits 1 (step start 0 -> 1), fwd 1 0, bwd 1 waits 0.5 (ready 6.5 -> 7), bwd 0 0 (busy until 8)
    assert s["worker1_rpc_s"] == pytest.approx(1.5)
    # w2: fwd 0 waits 0.5 (w1 done at 2), fwd 1 0 (busy until 3.5), bwd 1 0.5 (master at 5), bwd 0 0
    assert s["worker2_rpc_s"] == pytest.approx(1.0)
    assert s["master_opt_s"] == pytest.approx(0.5)
    # computing: [1,4.5] and [5.5,9] -> 7 of 10
    assert s["nobody_computes_s"] == pytest.approx(3.0)
    assert s["activation_bytes_per_step"] == 2 * (100 + 40 + 8)
    assert s["gradient_bytes_per_step"] == 2 * (8 + 40)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 10)), min_size=1, max_size=30))
def test_union_length_is_bounded_by_the_sum_and_the_hull(pairs):
    intervals = np.array([[a, a + d] for a, d in pairs])
    union = analysis.union_length(intervals)
    assert union <= (intervals[:, 1] - intervals[:, 0]).sum() + 1e-9
    assert union <= intervals[:, 1].max() - intervals[:, 0].min() + 1e-9
    assert union >= (intervals[:, 1] - intervals[:, 0]).max() - 1e-9


@settings(max_examples=100, deadline=None)
@given(st.floats(1e-3, 1e3), st.floats(1e-3, 1e3), st.integers(1, 64))
def test_pipeline_bound_properties(t1, t2, m):
    bound = analysis.pipeline_bound(t1, t2, m)
    assert 1 - 1e-9 <= bound <= (t1 + t2) / max(t1, t2) + 1e-9
    assert bound <= analysis.pipeline_bound(t1, t2, m + 1) + 1e-9
    assert analysis.pipeline_bound(t1, t1, m) == pytest.approx(2 * m / (m + 1))


def test_data_parallel_bytes_for_two_nodes_is_the_parameter_bytes_per_node():
    dp = analysis.data_parallel_bytes("lenet5", nodes=2)
    assert dp["parameter_bytes"] == 4 * 51902
    assert dp["dp_bytes_per_node_step"] == 4 * 51902 and dp["dp_bytes_per_step"] == 2 * 4 * 51902
    assert analysis.data_parallel_bytes("lenet5", nodes=4)["dp_bytes_per_node_step"] == 1.5 * 4 * 51902


def test_layer_profile_and_best_split():
    profile = analysis.profile_layers("lenet5", batch_size=8, repeats=3)
    assert list(profile.layer) == list(range(10)) and profile.share.sum() == pytest.approx(1)
    assert 1 <= analysis.best_split(profile) <= 9
    made_up = pd.DataFrame({"share": [0.1, 0.2, 0.3, 0.1, 0.3]})
    assert analysis.best_split(made_up) == 3          # 0.6 | 0.4 beats 0.3 | 0.7 and 0.7 | 0.3


@pytest.mark.parametrize("text,expected", [
    ("On WorkerInfo(id=2, name=worker2):\nRuntimeError(\"stage 2 on worker2 failed: TypeError: 'x'\")\n"
     "Traceback ...\nRuntimeError: stage 2 on worker2 failed: TypeError: 'x'\n", "stage 2 on worker2 failed: TypeError: 'x'"),
    ("Error on Node 1: something broke", "stage 1 (worker1, rank 1) failed: Error on Node 1: something broke"),
    ("eof", "RuntimeError: eof"),
    ("RuntimeError: stage 1 on master failed: ValueError: v\n", "stage 1 on master failed: ValueError: v"),
    ("Got the following error when running the callback: RuntimeError: worker2 did not answer within 3 s",
     "stage 2 (worker2, rank 2) failed: RuntimeError: worker2 did not answer within 3 s"),
])
def test_stage_errors_are_reduced_to_the_line_naming_the_stage(text, expected):
    assert explain(RuntimeError(text)) == expected


# ---------------------------------------------------------------- over RPC, three processes

def compare(a, b, atol=1e-6):
    assert a["losses"] == pytest.approx(b["losses"], abs=atol)
    assert a["grads"].keys() == b["grads"].keys()
    for name, grad in b["grads"].items():
        assert torch.allclose(a["grads"][name], grad, atol=atol, rtol=0), name
    for name, value in b["state"].items():
        assert torch.allclose(a["state"][name], value, atol=atol, rtol=0), name


@pytest.mark.slow
def test_rpc_split_model_gives_the_local_models_loss_gradients_and_update():
    cfg = mp.MPConfig()
    compare(mp.check_step(cfg, steps=2), mp.local_step(cfg, steps=2))
    assert_no_children_left()


@pytest.mark.slow
@pytest.mark.parametrize("fields", [{"micro_batches": 2}, {"micro_batches": 4, "split": 3}, {"micro_batches": 8},
                                    {"horizontal": True}, {"horizontal": True, "split": 9, "micro_batches": 4},
                                    {"optimizer": "local"}, {"placement": "colocated"},
                                    {"placement": "colocated", "optimizer": "local", "micro_batches": 4, "split": 3},
                                    {"horizontal": True, "optimizer": "local"}, {"optimizer": "deferred"},
                                    {"placement": "colocated", "optimizer": "deferred", "micro_batches": 4},
                                    {"horizontal": True, "optimizer": "deferred", "micro_batches": 2}])
def test_pipelined_and_horizontal_steps_give_the_same_update_as_the_whole_model(fields):
    cfg = mp.MPConfig(**fields)
    compare(mp.check_step(cfg, steps=2), mp.local_step(cfg, steps=2))


@pytest.mark.slow
def test_reference_workload_reaches_98_percent_and_records_everything():
    run = mp.run(mp.MPConfig(), progress=False, log=lambda *_: None)
    assert [r["epoch"] for r in run.rows] == [1, 2]
    assert run.rows[-1]["test_acc"] >= 98.0
    table = results.load("mp")
    assert len(table) == 2 and table.test_acc.iloc[-1] == run.rows[-1]["test_acc"]
    for column in ("worker1_compute_s", "worker2_rpc_s", "worker1_idle_frac", "bytes_per_step",
                   "dp_bytes_per_step", "samples_per_s", "wall_seconds", "torch", "micro_batches"):
        assert column in table.columns
    # every micro-batch of every step went forward and backward through both stages
    work = run.events[run.events.worker.isin(["worker1", "worker2"])]
    counts = work.groupby(["epoch", "worker", "phase_name"]).size()
    assert (counts == 1875).all() and len(counts) == 8
    assert 0 < run.rows[-1]["worker2_idle_frac"] < 1


@pytest.mark.slow
def test_rerunning_works_and_pipelined_events_show_both_stages_busy_at_once():
    cfg = mp.MPConfig(model="mlp", batch_size=64, micro_batches=4, epochs=1, train_subset=64 * 8)
    first = mp.run(cfg, progress=False, save=False, log=lambda *_: None)
    second = mp.run(cfg, progress=False, save=False, log=lambda *_: None)
    assert len(first.rows) == len(second.rows) == 1
    # the same run again; with m micro-batches a stage adds their gradients in the order their backward
    # passes finish, which varies, so float rounding differs (~1e-7 per step, ~1e-4 after 8 steps)
    assert first.rows[0]["train_loss"] == pytest.approx(second.rows[0]["train_loss"], abs=1e-3)
    for run in (first, second):
        fwd = run.events[run.events.phase_name == "fwd"]
        assert sorted(set(fwd.micro)) == [0, 1, 2, 3]
    assert_no_children_left()


@pytest.mark.slow
def test_a_last_batch_shorter_than_the_micro_batch_count_is_cut_into_fewer_pieces():
    cfg = mp.MPConfig(epochs=1, train_subset=35, micro_batches=4)   # batches of 32 and 3
    run = mp.run(cfg, progress=False, save=False, log=lambda *_: None)
    fwd = run.events[(run.events.worker == "worker1") & (run.events.phase_name == "fwd")]
    assert fwd.groupby("step").size().tolist() == [4, 3]
    assert fwd.in_bytes.sum() == 35 * 28 * 28 * 4 and math.isfinite(run.rows[0]["train_loss"])


@pytest.mark.slow
@pytest.mark.parametrize("stage,mode", [(2, "raise"), (1, "crash")])
def test_a_failing_stage_stops_all_three_processes_and_is_named(stage, mode):
    cfg = mp.MPConfig(fail_stage=stage, fail_mode=mode, epochs=1, train_subset=320)
    with pytest.raises(WorkerError) as info:
        mp.run(cfg, progress=False, save=False)
    message = str(info.value)
    assert f"stage {stage}" in message and f"worker{stage}" in message
    assert "All 3 workers were stopped" in message
    assert_no_children_left()


@pytest.mark.slow
@pytest.mark.parametrize("stage,fields", [(1, {}), (2, {}), (2, {"placement": "colocated"})])
def test_a_stage_that_never_answers_is_named_within_the_rpc_timeout(stage, fields):
    # A stuck stage (alive, silent) must not hang the notebook until the launch's hour-long timeout:
    # the master's call, or the next stage's fetch of its output, gives up after rpc_timeout and names it.
    cfg = mp.MPConfig(fail_stage=stage, fail_mode="hang", rpc_timeout=3, epochs=1, train_subset=64, **fields)
    with pytest.raises(WorkerError) as info:
        mp.run(cfg, progress=False, save=False)
    first = str(info.value).splitlines()[0]
    owner = cfg.roles[stage if cfg.placement == "separate" else stage - 1]   # e.g. "stage 2 (worker2, rank 2)"
    assert first.startswith(f"rank 0 raised LabError: {owner} failed") and "rpc_timeout)" in first, first
    assert_no_children_left()


@pytest.mark.slow
def test_the_master_can_host_stage_1_and_a_stage_error_still_names_where_it_ran():
    cfg = mp.MPConfig(placement="colocated", optimizer="local", fail_stage=2, epochs=1, train_subset=320)
    with pytest.raises(WorkerError) as info:
        mp.run(cfg, progress=False, save=False)
    message = str(info.value)
    assert "stage 2 on worker1 failed" in message and "All 2 workers were stopped" in message
    assert_no_children_left()


@pytest.mark.slow
def test_time_steps_measures_every_config_in_one_launch():
    configs = [mp.MPConfig(model="mlp", batch_size=64, micro_batches=m) for m in (1, 4)]
    table = mp.time_steps(configs, steps=3)
    assert list(table.micro_batches) == [1, 4]
    assert (table.step_ms > 0).all() and table.speedup_vs_m1.iloc[0] == 1
    assert table.bound.iloc[1] == pytest.approx(analysis.pipeline_bound(
        table.worker1_compute_ms.iloc[0], table.worker2_compute_ms.iloc[0], 4))
    assert table.bytes_per_step.iloc[0] == table.bytes_per_step.iloc[1]   # micro-batching moves the same data
    assert math.isclose(table.bytes_per_step.iloc[0], 64 * 4 * (784 + 2 * 784 + 2 * 10))


def test_best_pipelining_picks_the_fastest_micro_batch_count():
    medians = pd.DataFrame({"micro_batches": [1, 2, 4, 8], "speedup_vs_m1": [1.0, 1.3, 1.45, 1.2]})
    assert analysis.best_pipelining(medians) == (1.45, 4)
