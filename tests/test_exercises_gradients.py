"""Notebook 03's exercises: labkit's reference answers pass their checks (2 and 3 workers) without a word on
stderr; each typical mistake fails with its own diagnosis; stubs say "not written yet"; a deadlock ends within
seconds naming the rank that never reached the collective; the study's hooks run a student's functions.

Launching workers is the cost here, so each launch checks several functions (``check_averages``)."""
import time

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F

from conftest import quietly
from labkit.data_parallel import sync
from labkit.exercises import dp_run, gradient_answers as answers
from labkit.exercises.gradient_checks import (check_average, check_averages, check_bottleneck, check_train_step,
                                              check_train_steps)


# ------------------------------------------------------------------------------ typical mistakes

def summed(model):
    for p in model.parameters():
        dist.all_reduce(p.grad)


def weights_only(model):
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def into_a_copy(model):
    for p in model.parameters():
        average = p.grad.clone()
        dist.all_reduce(average)
        average /= dist.get_world_size()


def on_rank_0_only(model):
    if dist.get_rank() == 0:
        for p in model.parameters():
            dist.all_reduce(p.grad)


def stub(model):
    raise NotImplementedError()


def typo(model):
    for p in model.parameters():
        dist.all_reduce(p.gradient)


def _gathered(p):
    out = [torch.empty_like(p.grad) for _ in range(dist.get_world_size())]
    dist.all_gather(out, p.grad)
    return out


def gather_wrong_dim(model):
    for p in model.parameters():
        p.grad = torch.stack(_gathered(p)).mean(dim=1)


def gather_concatenated(model):
    for p in model.parameters():
        p.grad.copy_(torch.cat(_gathered(p)).mean(dim=0))   # broadcasts silently into the gradient's shape


def gather_summed(model):
    for p in model.parameters():
        p.grad.copy_(torch.stack(_gathered(p)).sum(dim=0))


def step_without_average(model, optimizer, batch, average):
    x, y = batch
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def step_without_zero_grad(model, optimizer, batch, average):
    x, y = batch
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    average(model)
    optimizer.step()
    return loss.item()


def step_before_backward(model, optimizer, batch, average):
    x, y = batch
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    optimizer.step()
    loss.backward()
    average(model)
    return loss.item()


def step_before_average(model, optimizer, batch, average):
    x, y = batch
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    average(model)
    return loss.item()


def step_returning_a_tensor(model, optimizer, batch, average):
    x, y = batch
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    average(model)
    optimizer.step()
    return loss


def step_stub(model, optimizer, batch, average):
    raise NotImplementedError()


def step_averaging_on_rank_0(model, optimizer, batch, average):
    x, y = batch
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    if dist.get_rank() == 0:
        average(model)
    optimizer.step()
    return loss.item()


# ------------------------------------------------------------------------------ gradient averaging

def test_allreduce_reference_passes_quietly_and_each_mistake_has_its_own_message():
    functions = [answers.allreduce_average_gradients, summed, weights_only, into_a_copy, stub, typo,
                 answers.allgather_average_gradients]
    results, stderr = quietly(check_averages, functions, "allreduce")
    reference, *mistakes = results
    assert reference.passed and stderr == "", (reference.message, stderr)
    assert "after 5 steps the model equals one process at batch 64" in reference.message
    messages = [r.message for r in mistakes]
    assert not any(r.passed for r in mistakes), messages
    assert "summed, not averaged (they are 2.00x the one-process gradient)" in messages[0]
    assert "after 5 steps your parameters differ from one process at batch 64 by" in messages[0]
    assert "the gradients of fc1.bias, fc2.bias were not averaged (ranks still differ by" in messages[1]
    assert "average every parameter" in messages[1]
    assert "left every gradient as it was" in messages[2]
    assert messages[3] == "not written yet: allreduce_average_gradients still raises NotImplementedError."
    assert messages[4].startswith("your allreduce_average_gradients raised AttributeError: ")
    assert "(rank 0" in messages[4] and "\n" not in messages[4]
    assert "called all_gather but never dist.all_reduce" in messages[5]
    assert len(set(messages)) == len(messages)


def test_allgather_reference_passes_and_wrong_dimensions_are_named():
    functions = [answers.allgather_average_gradients, gather_wrong_dim, gather_concatenated, gather_summed,
                 answers.allreduce_average_gradients]
    (reference, wrong_dim, concatenated, gathered_sum, other), stderr = quietly(check_averages, functions, "allgather")
    assert reference.passed and stderr == "", (reference.message, stderr)
    assert "your all-gather average has shape [2, 12] for fc1.weight's [7, 12]: average over dim 0" in wrong_dim.message
    assert "is not the mean over the ranks" in concatenated.message and "dim 0" in concatenated.message
    assert "summed, not averaged (they are 2.00x" in gathered_sum.message
    assert "called all_reduce but never dist.all_gather" in other.message
    assert not any(r.passed for r in (wrong_dim, concatenated, gathered_sum, other))


def test_three_workers():
    (reference, summed_3), stderr = quietly(check_averages, [answers.allreduce_average_gradients, summed], nodes=3)
    assert reference.passed and stderr == "", reference.message
    assert "batch 96" in reference.message and "on 3 workers" in reference.message
    assert "they are 3.00x the one-process gradient" in summed_3.message
    (step, no_average), _ = quietly(check_train_steps, [answers.train_step, step_without_average], nodes=3,
                                    average=answers.allgather_average_gradients)
    assert step.passed and "on 3 workers" in step.message, step.message
    assert "never called average(model)" in no_average.message


def test_a_deadlock_ends_in_seconds_and_names_the_missing_rank():
    start = time.monotonic()
    result = check_average(on_rank_0_only, timeout=20)
    assert time.monotonic() - start < 40   # a finished rank gives up after 20/3 s; without the watch: forever
    assert not result.passed
    assert "rank 0 waited forever in all_reduce (its 1st collective on fc1.weight's gradient)" in result.message
    assert "because rank(s) 1 never reached it" in result.message and "\n" not in result.message


# ------------------------------------------------------------------------------ the training step

def test_train_step_reference_passes_and_each_mistake_has_its_own_message():
    functions = [answers.train_step, step_without_average, step_without_zero_grad, step_before_backward,
                 step_before_average, step_returning_a_tensor, step_stub, "not a function"]
    results, stderr = quietly(check_train_steps, functions)
    reference, *mistakes = results
    assert reference.passed and stderr == "", (reference.message, stderr)
    messages = [r.message for r in mistakes]
    assert not any(r.passed for r in mistakes), messages
    assert "train_step never called average(model)" in messages[0]
    assert "after 5 steps your parameters differ from one process at batch 64" in messages[0]
    assert "zero_grad missing: gradients accumulate" in messages[1]
    assert "optimizer.step() ran before loss.backward()" in messages[2]
    assert "optimizer.step() ran before average(model)" in messages[3]
    assert "return loss.item()" in messages[4]
    assert messages[5] == "not written yet: train_step still raises NotImplementedError."
    assert messages[6].startswith("expected your function train_step")
    assert len(set(messages)) == len(messages)


def test_a_student_average_that_raises_is_named_as_the_culprit_of_train_step():
    result = check_train_step(answers.train_step, average=typo)
    assert not result.passed
    assert result.message.startswith("your typo raised AttributeError"), result.message


def test_a_train_step_deadlock_names_the_missing_rank():
    result = check_train_step(step_averaging_on_rank_0, timeout=20)
    assert "rank 0 waited forever in all_reduce" in result.message and "rank(s) 1 never reached it" in result.message


# ------------------------------------------------------------------------------ the bottleneck node

def every_rank_sleeps(rank, world_size, delay_ms):
    time.sleep(delay_ms / 1000)


def first_rank_sleeps(rank, world_size, delay_ms):
    if rank == 0:
        time.sleep(delay_ms / 1000)


def sleeps_seconds(rank, world_size, delay_ms):
    if rank == world_size - 1:
        time.sleep(delay_ms)


def fixed_delay(rank, world_size, delay_ms):
    if rank == world_size - 1:
        time.sleep(0.05)


def bottleneck_stub(rank, world_size, delay_ms):
    raise NotImplementedError()


def test_bottleneck_reference_passes_and_each_mistake_has_its_own_message():
    result, stderr = quietly(check_bottleneck, answers.bottleneck_delay)
    assert result.passed and stderr == "", result.message
    start = time.monotonic()
    messages = [check_bottleneck(fn).message for fn in (every_rank_sleeps, first_rank_sleeps, sleeps_seconds,
                                                        fixed_delay, bottleneck_stub)]
    assert time.monotonic() - start < 20   # sleeping 150 s instead of 150 ms is caught, not waited for
    assert messages[0].startswith("every rank slept")
    assert messages[1].startswith("rank 0 slept, but the bottleneck is the last node, rank world_size - 1 = 1")
    assert "time.sleep takes seconds" in messages[2]
    assert "slept 50 ms when asked for delay_ms=150 ms" in messages[3]
    assert messages[4] == "not written yet: bottleneck_delay still raises NotImplementedError."


# ------------------------------------------------------------------------------ the experiments' hooks

def test_function_sync_runs_and_times_the_students_average():
    model = dp_run.TinyNet()
    calls = []
    stepper = sync.build("allgather", model, torch.optim.SGD(model.parameters(), lr=0.1), 4, average=calls.append)
    x, y = dp_run.shard(dp_run.global_batch(0, 1), 0)
    times = stepper.step((x, y))
    assert calls == [model] and times.loss > 0 and times.comm >= 0
    assert stepper.bytes_per_step() == 3 * 4 * sum(p.numel() for p in model.parameters())
    idle = stepper.step(None)   # a rank without a batch still averages (zero gradients)
    assert idle.loss is None and len(calls) == 2
    assert isinstance(sync.build("allreduce", model, torch.optim.SGD(model.parameters(), lr=0.1), 2), sync.AllReduceSync)


def test_labelled_says_whose_averaging_ran_without_touching_the_table():
    table = pd.DataFrame({"setup": ["2 workers allreduce", "2 workers ddp"], "sync": ["allreduce", "ddp"]})
    shown = dp_run.labelled(table, {"allreduce": "all-reduce (yours)"})
    assert shown["setup"].tolist() == ["2 workers all-reduce (yours)", "2 workers ddp"]
    assert table["sync"].tolist() == ["allreduce", "ddp"]
