"""Notebook 05's exercise: a model split over RPC. labkit's answer passes its check on two models, every
typical mistake fails with its own diagnosis, a stub or an exception is one line, a hang ends, and a
student's split trains exactly as labkit's driver does. The mistakes are checked in one launch (cheap)."""
import time

import pytest
import torch
import torch.distributed.autograd as dist_autograd
import torch.nn.functional as F
from torch.distributed import rpc

from labkit import model_parallel as mp
from labkit.errors import LabError
from labkit.exercises import rpc_answers as answer
from labkit.exercises.result import CheckResult
from labkit.exercises.rpc_checks import check_rpc_split, check_rpc_splits
from labkit.exercises.rpc_split import RpcSplit, Stage
from labkit.exercises.using import reference, use
from labkit.train import single

make_stages, forward, train_step = answer.make_stages, answer.forward, answer.train_step


# ---------------------------------------------------------------- typical mistakes, one function each

def both_on_worker1(model, seed=0):
    return rpc.remote("worker1", Stage, args=(model, 1, seed)), rpc.remote("worker1", Stage, args=(model, 2, seed))


def swapped_workers(model, seed=0):
    return rpc.remote("worker2", Stage, args=(model, 1, seed)), rpc.remote("worker1", Stage, args=(model, 2, seed))


def stages_on_the_master(model, seed=0):
    return Stage(model, 1, seed), Stage(model, 2, seed)


def skips_stage_1(stages, x):
    return stages[1].rpc_sync().forward(x)


def wrong_order(stages, x):
    return stages[0].rpc_sync().forward(stages[1].remote().forward(x))


def through_the_master(stages, x):
    return stages[1].rpc_sync().forward(stages[0].rpc_sync().forward(x))


def returns_an_rref(stages, x):
    return stages[1].remote().forward(stages[0].remote().forward(x))


def ignores_x(stages, x):
    return forward(stages, torch.zeros_like(x))


def local_backward(stages, optimizer, x, y):
    with dist_autograd.context() as context_id:
        loss = F.cross_entropy(forward(stages, x), y)
        loss.backward()
        optimizer.step(context_id)
    return loss.item()


def backward_outside_the_context(stages, optimizer, x, y):
    with dist_autograd.context() as context_id:
        loss = F.cross_entropy(forward(stages, x), y)
    dist_autograd.backward(context_id, [loss])
    optimizer.step(context_id)
    return loss.item()


def step_outside_the_context(stages, optimizer, x, y):
    with dist_autograd.context() as context_id:
        loss = F.cross_entropy(forward(stages, x), y)
        dist_autograd.backward(context_id, [loss])
    optimizer.step(context_id)
    return loss.item()


def forward_outside_the_context(stages, optimizer, x, y):
    loss = F.cross_entropy(forward(stages, x), y)
    with dist_autograd.context() as context_id:
        dist_autograd.backward(context_id, [loss])
        optimizer.step(context_id)
    return loss.item()


def never_steps(stages, optimizer, x, y):
    with dist_autograd.context() as context_id:
        loss = F.cross_entropy(forward(stages, x), y)
        dist_autograd.backward(context_id, [loss])
    return loss.item()


def summed_loss(stages, optimizer, x, y):
    with dist_autograd.context() as context_id:
        loss = F.cross_entropy(forward(stages, x), y, reduction="sum")
        dist_autograd.backward(context_id, [loss])
        optimizer.step(context_id)
    return loss.item()


def steps_twice(stages, optimizer, x, y):
    with dist_autograd.context() as context_id:
        loss = F.cross_entropy(forward(stages, x), y)
        dist_autograd.backward(context_id, [loss])
        optimizer.step(context_id)
        optimizer.step(context_id)
    return loss.item()


def stub(*args):
    # YOUR CODE HERE
    raise NotImplementedError()


def raises(stages, x):
    return {}["stage1"]


def hangs(stages, optimizer, x, y):
    time.sleep(1000)


MISTAKES = {   # name: (split, key phrase of its own diagnosis)
    "both stages on one worker": (RpcSplit(both_on_worker1, forward, train_step),
                                  "both stages live on worker1: place stage 2 on worker2"),
    "workers swapped": (RpcSplit(swapped_workers, forward, train_step),
                        "stage 1 (part 1) belongs on worker1"),
    "stages built on the master": (RpcSplit(stages_on_the_master, forward, train_step),
                                   "not RRefs: create each stage on its worker with rpc.remote"),
    "forward skips stage 1": (RpcSplit(make_stages, skips_stage_1, train_step),
                              "stage 1 never ran"),
    "stages in the wrong order": (RpcSplit(make_stages, wrong_order, train_step),
                                  "the stages ran in the wrong order"),
    "activations through the master": (RpcSplit(make_stages, through_the_master, train_step),
                                       "the activations went through the master"),
    "forward returns an RRef": (RpcSplit(make_stages, returns_an_rref, train_step),
                                "not the output tensor"),
    "forward ignores x": (RpcSplit(make_stages, ignores_x, train_step),
                          "the forward output differs from the whole model by"),
    "local loss.backward()": (RpcSplit(make_stages, forward, local_backward),
                              "loss.backward() was called instead of dist_autograd.backward"),
    "backward outside the context": (RpcSplit(make_stages, forward, backward_outside_the_context),
                                     "dist_autograd.backward ran after the distributed autograd context had closed"),
    "step outside the context": (RpcSplit(make_stages, forward, step_outside_the_context),
                                 "optimizer.step(context_id) ran after the distributed autograd context had closed"),
    "forward outside the context": (RpcSplit(make_stages, forward, forward_outside_the_context),
                                    "stage 1 and stage 2 received no gradient"),
    "optimizer never stepped": (RpcSplit(make_stages, forward, never_steps),
                                "the parameters did not change after the step: did you step the DistributedOptimizer"),
    "summed loss": (RpcSplit(make_stages, forward, summed_loss),
                    "the first step's gradients differ from the whole model's"),
    "two optimizer steps": (RpcSplit(make_stages, forward, steps_twice),
                            "the optimizer stepped 4 times in 2 calls of train_step"),
    "stub": (RpcSplit(make_stages, forward, stub),
             "not written yet: train_step still raises NotImplementedError"),
    "exception": (RpcSplit(make_stages, raises, train_step),
                  "forward raised KeyError: 'stage1'"),
}


@pytest.fixture(scope="module")
def checked():
    """labkit's answer, every mistake and a hanging train_step, checked in one launch (10 s per call at most)."""
    names = ["answer", *MISTAKES, "hang"]
    splits = [answer.SPLIT, *(split for split, _ in MISTAKES.values()), RpcSplit(make_stages, forward, hangs)]
    start = time.perf_counter()
    results = dict(zip(names, check_rpc_splits(splits, timeout=40)))
    results["seconds"] = time.perf_counter() - start
    return results


@pytest.fixture(scope="module")
def mistakes(checked):
    return {name: checked[name] for name in MISTAKES}


def assert_passes(result, model):
    assert isinstance(result, CheckResult) and result.exercise == "rpc_split"
    assert result.passed, result.message
    assert f"your RPC split of {model} computes what the whole model computes" in result.message
    assert max(result.details.values()) < 1e-5


def test_labkits_answer_passes_on_two_models(checked):
    assert_passes(checked["answer"], "lenet5")
    assert_passes(check_rpc_split(answer.SPLIT, model="mlp", seed=3), "mlp")   # the hidden test's model
    assert reference("rpc_split") is answer.SPLIT


@pytest.mark.parametrize("name", list(MISTAKES))
def test_each_mistake_fails_with_its_own_diagnosis(mistakes, name):
    result = mistakes[name]
    assert not result.passed
    assert MISTAKES[name][1] in result.message, result.message
    assert "\n" not in result.message and "Traceback" not in result.message


def test_the_diagnoses_are_distinct(mistakes):
    messages = [r.message for r in mistakes.values()]
    assert len(set(messages)) == len(messages)
    for name, result in mistakes.items():   # no other mistake's phrase fits this one's message
        others = [n for n, (_, phrase) in MISTAKES.items() if n != name and phrase in result.message]
        assert not others, (name, others)


def test_the_three_functions_as_a_tuple_and_a_bad_argument():
    bad = check_rpc_split("make_stages")
    assert not bad.passed and "expected RpcSplit(make_stages, forward, train_step)" in bad.message
    with pytest.raises(LabError, match="part must be 1 or 2"):
        Stage("lenet5", 3)


def test_a_hanging_train_step_ends_with_a_message_naming_it(checked):
    assert not checked["hang"].passed
    assert "train_step did not return within 10 s" in checked["hang"].message
    assert checked["seconds"] < 120   # the hang cost its 10 s, not the launch's timeout


def test_a_student_split_trains_as_the_whole_model_does_and_records_its_timeline(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_RESULTS", str(tmp_path))
    split = RpcSplit(make_stages, forward, train_step)
    cfg = mp.MPConfig(epochs=1, train_subset=320)
    ours = split.run(cfg, progress=False, save=False).table().iloc[-1]
    whole = single.run(single.SingleConfig(epochs=1, train_subset=320, threads=1), progress=False, save=False)[-1]
    assert ours.train_loss == pytest.approx(whole["train_loss"], abs=1e-5)
    assert ours.test_acc == pytest.approx(whole["test_acc"], abs=1e-6)
    images, features, logits = 32 * 784 * 4, 32 * 400 * 4, 32 * 10 * 4
    assert ours.bytes_per_step == images + 2 * features + 2 * logits   # forward and backward messages
    assert ours.worker1_compute_s > 0 and ours.worker2_compute_s > 0 and ours.steps == 10
    differences = split.compare_to_local(mp.MPConfig(), steps=2)
    assert differences.max().max() < 1e-5
    with pytest.raises(LabError, match="natural split, one micro-batch"):
        split.run(mp.MPConfig(micro_batches=2))


def test_use_falls_back_on_labkits_split_until_the_check_passes(capsys):
    mine = RpcSplit(make_stages, forward, stub)
    failed_result = CheckResult("rpc_split", False, "not written yet")
    assert use(failed_result, mine) is answer.SPLIT
    assert "rpc_split is not done yet" in capsys.readouterr().out
    assert use(CheckResult("rpc_split", True, "ok"), mine) is mine


def pipelined_forward(stages, x, micro_batches=4):
    """The advanced exercise: every micro-batch through stage 1 then stage 2, all in flight at once."""
    stage1, stage2 = stages
    futures = [stage2.rpc_async().forward(stage1.remote().forward(chunk)) for chunk in x.chunk(micro_batches)]
    return torch.cat([f.wait() for f in futures])


def test_a_pipelined_forward_passes_the_check_with_micro_batches_and_only_with_them():
    pipelined, plain = check_rpc_splits([RpcSplit(make_stages, pipelined_forward, train_step), answer.SPLIT],
                                        micro_batches=4)
    assert pipelined.passed, pipelined.message
    assert not plain.passed and "run each stage once per micro-batch (4 times)" in plain.message
