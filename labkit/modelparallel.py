"""Model parallelism over ``torch.distributed.rpc``: a master drives two stage workers (3 processes).

Rank 0 ("master") keeps the data, creates the model's two parts on "worker1" and "worker2" with
``rpc.remote``, runs every step through their RRefs inside ``dist_autograd.context()``, and updates
both parts with a ``DistributedOptimizer``. ``micro_batches=m`` pipelines each batch in m pieces;
``horizontal=True`` divides one Linear layer's neurons between the workers instead of cutting
the layer list. See ``labkit.pipeline`` for the step itself and ``labkit.mpanalysis`` for the numbers.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from . import data, models, mpanalysis, pipeline, results, training
from .errors import LabError


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("", "none", "default") else int(text)


@dataclass(frozen=True)
class MPConfig:
    """Model parallel over RPC: a master and two stage workers train one model split in two."""

    model: str = "lenet5"
    dataset: str = "mnist"
    epochs: int = 2
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    seed: int = 0
    split: int | None = field(default=None, metadata={"parse": _optional_int, "help": (
        "first layer of stage 2 (or, with --horizontal, the Linear layer to divide); none = the model's natural split")})
    micro_batches: int = field(default=1, metadata={"help": "pipeline each batch in this many equal micro-batches"})
    horizontal: bool = field(default=False, metadata={"help": "divide one Linear layer's neurons between the workers"})
    nodes: int = field(default=3, metadata={"help": "processes: the master and two stage workers"})
    threads: int = field(default=1, metadata={"help": "torch threads per process; 0 = all cores"})
    train_subset: int = field(default=0, metadata={"help": "use only the first N training samples; 0 = all"})
    fail_stage: int = field(default=0, metadata={"help": "make stage K fail at its first micro-batch (to see how "
                                                         "failures are reported); 0 = off"})
    fail_mode: str = field(default="raise", metadata={"help": "how fail_stage fails: raise (an exception) or "
                                                             "crash (its process dies)"})
    timeout: float = field(default=3600.0, metadata={"help": "stop every process after this many seconds"})

    def __post_init__(self):
        training.check_common(self)
        if self.nodes != 3:
            raise LabError(f"model parallelism needs exactly 3 processes (a master and two stage workers), "
                           f"got nodes={self.nodes}; use nodes=3.")
        if self.micro_batches < 1:
            raise LabError(f"micro_batches must be at least 1, got {self.micro_batches}.")
        if self.batch_size % self.micro_batches:
            raise LabError(f"batch_size {self.batch_size} cannot be cut into {self.micro_batches} equal micro-batches; "
                           f"choose a batch size divisible by {self.micro_batches} "
                           f"(e.g. {self.micro_batches * max(1, self.batch_size // self.micro_batches)}).")
        if self.fail_stage not in (0, 1, 2):
            raise LabError(f"fail_stage must be 0 (off), 1 or 2, got {self.fail_stage}.")
        if self.fail_mode not in ("raise", "crash"):
            raise LabError(f"fail_mode must be 'raise' or 'crash', got {self.fail_mode!r}.")
        if self.timeout <= 0:
            raise LabError(f"timeout must be positive, got {self.timeout}.")
        pipeline.resolve_split(models.build(self.model), self.split, self.horizontal)

    @property
    def at(self) -> int:
        """The split as a layer index of the model."""
        return pipeline.resolve_split(models.build(self.model), self.split, self.horizontal)


WARMUP = 5          # untimed steps before ``time_steps`` measures
ROLES = {0: "the master (rank 0)", 1: "stage 1 (worker1, rank 1)", 2: "stage 2 (worker2, rank 2)"}


@dataclass
class MPRun:
    """A finished run: one row per epoch (config, metrics, environment) and every recorded event."""

    config: MPConfig
    rows: list[dict]
    events: pd.DataFrame

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


# ---------------------------------------------------------------- inside the processes

def _explain(exc: Exception) -> str:
    """A stage's error as it arrives at the master, reduced to the line that names the stage."""
    text = str(exc)
    named = re.search(r"^RuntimeError: ((?:stage|half) \d on worker\d failed: .*)$", text, re.MULTILINE)
    if named:
        return named.group(1).rstrip(". ")
    node = re.search(r"worker(\d)|Node (\d)", text)
    if node:
        k = int(node.group(1) or node.group(2))
        first = next((line for line in text.splitlines() if line.strip()), "")
        return f"{ROLES.get(k, f'rank {k}')} failed: {first}"
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _on_rank(cfg: MPConfig, task: str, progress: bool, steps: int = 1, more: tuple = ()):
    """The function every rank runs: the master works, the stage workers serve RPC until it is done."""
    import torch.distributed as dist

    from .launcher import rank
    if rank() != 0:
        dist.barrier()   # serve RPC until the master is done (a crash meanwhile is this rank's failure)
        return None
    if task == "time":
        out = [_on_master(c, _time, progress, steps) for c in (cfg, *more)]
    else:
        out = _on_master(cfg, _train if task == "train" else _check, progress, steps)
    dist.barrier()
    return out


def _on_master(cfg: MPConfig, task, progress: bool, steps: int):
    driver = None
    try:
        driver = pipeline.make_driver(cfg, cfg.at)
        return task(cfg, driver, progress, steps)
    except RuntimeError as exc:
        raise LabError(f"{_explain(exc)}. The master stopped the run.") from None
    finally:
        if driver is not None:
            driver.close()


def _train(cfg: MPConfig, driver: pipeline._Driver, progress: bool, steps_unused: int) -> dict:
    from .launcher import report
    train, test = data.load(cfg.dataset, train=True), data.load(cfg.dataset, train=False)
    n = min(cfg.train_subset, len(train)) if cfg.train_subset else len(train)
    steps = (n + cfg.batch_size - 1) // cfg.batch_size
    history, events = [], []
    for epoch in range(cfg.epochs):
        order = training.epoch_order(n, cfg.seed, epoch)
        start, loss_sum = time.perf_counter(), 0.0
        for step in range(steps):
            x, y = train.batch(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
            loss = driver.step(x, y)
            loss_sum += loss
            if progress and (step % 20 == 0 or step == steps - 1):
                report(epoch=epoch + 1, step=step + 1, total=steps, loss=loss)
        seconds = time.perf_counter() - start
        events.append(driver.take_events())
        model = pipeline.assemble(cfg.model, cfg.seed, cfg.at, cfg.horizontal, driver.states())
        test_loss, test_acc = training.evaluate(model, test)
        if progress:
            report(epoch=epoch + 1, step=steps, total=steps, acc=test_acc)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / steps, "test_loss": test_loss,
                        "test_acc": test_acc, "epoch_seconds": seconds, "samples_per_s": n / seconds,
                        "step_ms": 1e3 * seconds / steps, "steps": steps, "train_size": n})
    return {"history": history, "events": events}


def _check(cfg: MPConfig, driver: pipeline._Driver, progress: bool, steps: int) -> dict:
    """A few steps on the first batches of epoch 0: losses, first-step gradients, final parameters."""
    train = data.load(cfg.dataset, train=True)
    order = training.epoch_order(len(train), cfg.seed, 0)
    losses, grads = [], {}
    for step in range(steps):
        x, y = train.batch(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
        keep = (lambda ctx: grads.update(driver.gradients(ctx))) if step == 0 else None
        losses.append(driver.step(x, y, context=keep))
    return {"losses": losses,
            "grads": pipeline.merge_parts(cfg.model, cfg.at, cfg.horizontal, grads),
            "state": pipeline.merge_parts(cfg.model, cfg.at, cfg.horizontal, driver.states())}


def _time(cfg: MPConfig, driver: pipeline._Driver, progress_unused: bool, steps: int) -> dict:
    """``steps`` timed training steps after a few untimed ones (the first steps warm caches up)."""
    train = data.load(cfg.dataset, train=True)
    order = training.epoch_order(len(train), cfg.seed, 0)
    batches = [train.batch(order[(i * cfg.batch_size) % len(train):][:cfg.batch_size]) for i in range(steps + WARMUP)]
    for x, y in batches[:WARMUP]:
        driver.step(x, y)
    driver.take_events()
    start = time.perf_counter()
    for x, y in batches[WARMUP:]:
        driver.step(x, y)
    return {"seconds": time.perf_counter() - start, "events": driver.take_events()}


# ---------------------------------------------------------------- in the notebook / CLI process

def _launch(cfg: MPConfig, task: str, progress: bool, steps: int = 1, more: tuple = ()):
    from .launcher import WorkerError, launch
    threads = training.resolve_threads(cfg.threads)
    try:
        return launch(_on_rank, cfg.nodes, cfg, task, progress, steps, more, threads=threads,
                      timeout=cfg.timeout, rpc=True)[0]
    except WorkerError as exc:
        if exc.ranks and exc.ranks[0] in (1, 2):
            raise WorkerError(f"model parallel run failed in {ROLES[exc.ranks[0]]}: {exc}", exc.ranks, exc.reason,
                              exc.tracebacks, exc.exitcodes) from None
        raise


def train_mp(cfg: MPConfig, progress: bool = True, save: bool = True, log=print) -> MPRun:
    """Train with the model split over three processes; print and return one row per epoch
    (appended to results/mp.csv) and the events behind the timeline."""
    out = _launch(cfg, "train", progress)
    frames, history, wall = [], [], 0.0
    dp = mpanalysis.data_parallel_bytes(cfg.model)
    for row, raw in zip(out["history"], out["events"]):
        frame = mpanalysis.events_frame(raw, epoch=row["epoch"])
        frames.append(frame)
        wall += row["epoch_seconds"]
        history.append({**row, "wall_seconds": wall, "split_at": cfg.at,
                        **mpanalysis.summarize(frame, row["epoch_seconds"], cfg.horizontal), **dp})
    for row in history:
        log(f"epoch {row['epoch']}/{cfg.epochs}  train loss {row['train_loss']:.4f}  test acc {row['test_acc']:.2f} %  "
            f"{row['epoch_seconds']:.1f} s  {row['samples_per_s']:.0f} samples/s  step {row['step_ms']:.2f} ms  "
            f"idle w1 {row['worker1_idle_frac']:.0%} w2 {row['worker2_idle_frac']:.0%}")
    rows = results.run_rows(cfg, history, kind="mp", threads_used=training.resolve_threads(cfg.threads))
    if save:
        path = results.append(rows, "mp")
        log(f"wall time {wall:.1f} s; results appended to {path}")
    return MPRun(cfg, rows, pd.concat(frames, ignore_index=True))


def check_step(cfg: MPConfig, steps: int = 1) -> dict:
    """Run ``steps`` training steps over RPC on the first batches of epoch 0 and return the losses,
    the first step's gradients and the final parameters, by the whole model's parameter names."""
    return _launch(cfg, "check", False, steps)


def local_step(cfg: MPConfig, steps: int = 1) -> dict:
    """The same as ``check_step`` on the whole model in this process: the reference to compare with."""
    train = data.load(cfg.dataset, train=True)
    order = training.epoch_order(len(train), cfg.seed, 0)
    model = models.build(cfg.model, seed=cfg.seed)
    opt = training.make_optimizer(model, cfg)
    losses, grads = [], {}
    for step in range(steps):
        x, y = train.batch(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0:
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "grads": grads, "state": {k: v.clone() for k, v in model.state_dict().items()}}


def time_steps(configs: list[MPConfig], steps: int = 30) -> pd.DataFrame:
    """Time ``steps`` training steps of each config, all in one 3-process launch so they are measured
    under the same conditions. One row per config: step time, per-worker compute, rpc wait and idle
    fraction, bytes per step, and the pipelining bound from the stage times of the same model and split
    with one micro-batch (when that config is in the list)."""
    if not configs:
        raise LabError("time_steps needs at least one configuration.")
    if steps < 1:
        raise LabError(f"steps must be at least 1, got {steps}.")
    if len({c.threads for c in configs}) > 1:
        raise LabError("all configurations timed together must use the same threads per process.")
    measured = _launch(configs[0], "time", False, steps, tuple(configs[1:]))
    rows = []
    for cfg, out in zip(configs, measured):
        stats = mpanalysis.summarize(mpanalysis.events_frame(out["events"]), out["seconds"], cfg.horizontal)
        per_step = {k.replace("_s", "_ms"): 1e3 * v / steps for k, v in stats.items() if k.endswith("_s")}
        rows.append({"model": cfg.model, "split_at": cfg.at, "horizontal": cfg.horizontal,
                     "micro_batches": cfg.micro_batches, "batch_size": cfg.batch_size,
                     "step_ms": 1e3 * out["seconds"] / steps, "samples_per_s": steps * cfg.batch_size / out["seconds"],
                     **per_step, **{k: v for k, v in stats.items() if not k.endswith("_s")}})
    table = pd.DataFrame(rows)
    key = ["model", "split_at", "horizontal", "batch_size"]
    base = table[table.micro_batches == 1].groupby(key)[["step_ms", "worker1_compute_ms", "worker2_compute_ms"]].median()
    speedup, bound = [], []
    for _, row in table.iterrows():
        b = base.loc[tuple(row[key])] if tuple(row[key]) in base.index else None
        speedup.append(b.step_ms / row.step_ms if b is not None else float("nan"))
        bound.append(mpanalysis.pipeline_bound(b.worker1_compute_ms, b.worker2_compute_ms, int(row.micro_batches))
                     if b is not None else float("nan"))
    return table.assign(speedup_vs_m1=speedup, bound=bound)


def local_step_ms(model: str, batch_size: int = 32, steps: int = 100, threads: int = 1, seed: int = 0) -> float:
    """Milliseconds per training step of the whole model in this process (the single-machine reference)."""
    torch.set_num_threads(threads)
    train = data.load("mnist", train=True)
    order = training.epoch_order(len(train), seed, 0)
    net = models.build(model, seed=seed)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    batches = [train.batch(order[i * batch_size:(i + 1) * batch_size]) for i in range(steps + WARMUP)]
    for i, (x, y) in enumerate(batches):
        if i == WARMUP:
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return 1e3 * (time.perf_counter() - start) / steps


def compare_to_local(cfg: MPConfig, steps: int = 2) -> pd.DataFrame:
    """Largest differences between the RPC run and the whole model in one process, per parameter:
    first-step gradient and parameters after ``steps`` steps (and the loss of every step)."""
    remote, local = check_step(cfg, steps), local_step(cfg, steps)
    rows = [{"parameter": name, "max |grad difference|": (remote["grads"][name] - g).abs().max().item(),
             "max |parameter difference|": (remote["state"][name] - local["state"][name]).abs().max().item()}
            for name, g in local["grads"].items()]
    loss = max(abs(a - b) for a, b in zip(remote["losses"], local["losses"]))
    return pd.DataFrame(rows + [{"parameter": "loss (every step)", "max |grad difference|": loss}]).set_index("parameter")
