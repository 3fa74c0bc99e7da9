"""``DPConfig``: N workers train one model data-parallel (reference: 2 nodes, lenet5, batch 32 per
node), and what a config implies before any process starts: each node's sampler and whether every
node gets data at all."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import LabError
from ..train.config import TrainConfig

if TYPE_CHECKING:
    import torch

# The synchronisers of ``labkit.data_parallel.sync`` by name (here so that a config validates without
# torch, which keeps the command line instant; a test checks that the two agree).
SYNC_MODES = ("ddp", "allreduce", "allgather", "local")


EPOCH_ENDS = ("longest", "shortest")


def parse_straggler(text: str) -> dict:
    """``"1:50"`` or ``"1:50,3:10"`` -> {rank: delay_ms}; ``""`` -> no straggler."""
    try:
        return {int(r): float(ms) for r, ms in (item.split(":") for item in text.split(",") if item.strip())}
    except ValueError:
        raise LabError(f"straggler {text!r} is not RANK:DELAY_MS[,RANK:DELAY_MS...], e.g. 1:50.") from None


def parse_local_steps(text: str):
    """``"epoch"`` or a whole number of local steps between averages."""
    return "epoch" if str(text).strip().lower() == "epoch" else int(text)


@dataclass(frozen=True)
class DPConfig(TrainConfig):
    """N workers train one model data-parallel (reference: 2 nodes, lenet5, batch 32 per node)."""

    batch_size: int = field(default=32, metadata={"help": "per node"})
    nodes: int = 2
    sync: str = field(default="allreduce", metadata={"help": " | ".join(SYNC_MODES)})
    partition: str = field(default="iid", metadata={"help": "a labkit.data.partition strategy"})
    alpha: float = field(default=0.5, metadata={"help": "Dirichlet concentration (partition=dirichlet)"})
    beta: float = field(default=0.5, metadata={"help": "Dirichlet concentration of node sizes (quantity)"})
    k: int = field(default=2, metadata={"help": "classes per node (label_k) or shards per node (shards)"})
    local_steps: int | str = field(default=50, metadata={"parse": parse_local_steps,
                                                          "help": "H for sync=local: an int or 'epoch'"})
    straggler: dict = field(default_factory=dict, metadata={"parse": parse_straggler,
                                                            "help": "RANK:DELAY_MS added to every step"})
    epoch_end: str = field(default="longest", metadata={"help": "when nodes hold unequal shares: longest (an "
                                                                "epoch goes on while any node has data) or shortest "
                                                                "(it ends when the first node runs out)"})
    epoch_steps: int = field(default=0, metadata={"help": "end every epoch after at most this many optimizer "
                                                          "steps (to compare at equal steps); 0 = no limit"})
    timeout: float = field(default=900.0, metadata={"help": "seconds before the launch is stopped"})

    def __post_init__(self):
        super().__post_init__()
        if self.sync not in SYNC_MODES:
            raise LabError(f"unknown sync mode {self.sync!r}; choose one of: {', '.join(SYNC_MODES)}.")
        if self.nodes < 1:
            raise LabError(f"nodes must be at least 1, got {self.nodes}.")
        if self.local_steps != "epoch" and (not isinstance(self.local_steps, int) or self.local_steps < 1):
            raise LabError(f"local_steps (H) must be an integer >= 1 or 'epoch', got {self.local_steps!r}.")
        bad = [r for r in self.straggler if not 0 <= r < self.nodes]
        if bad:
            raise LabError(f"straggler rank {bad[0]} does not exist with {self.nodes} nodes "
                           f"(ranks are 0..{self.nodes - 1}).")
        if any(ms < 0 for ms in self.straggler.values()):
            raise LabError("straggler delays must be >= 0 ms.")
        if self.epoch_steps < 0:
            raise LabError(f"epoch_steps must be 0 (no limit) or positive, got {self.epoch_steps}.")
        if self.epoch_end not in EPOCH_ENDS:
            raise LabError(f"unknown epoch_end {self.epoch_end!r}; choose one of: {', '.join(EPOCH_ENDS)}.")

    def partition_params(self) -> dict:
        """The parameters the chosen partition strategy takes, from this config's fields."""
        return {"dirichlet": {"alpha": self.alpha}, "quantity": {"beta": self.beta},
                "label_k": {"k": self.k}, "label_k_random": {"k": self.k}, "shards": {"k": self.k}}.get(self.partition, {})

    @property
    def average_every(self) -> int | None:
        """Local SGD: steps between model averages (None: once per epoch)."""
        return None if self.local_steps == "epoch" else int(self.local_steps)


def train_labels(cfg: DPConfig) -> torch.Tensor:
    """The labels of the training samples this config uses (its first ``train_subset``, or all)."""
    from ..data import datasets
    labels = datasets.load(cfg.dataset).labels
    return labels[: cfg.train_subset] if cfg.train_subset else labels


def make_sampler(cfg: DPConfig, rank: int, labels: torch.Tensor):
    """The sampler of ``rank``, as that rank builds it."""
    from ..data import samplers
    return samplers.make(cfg.partition, rank, cfg.nodes, labels.numpy(), seed=cfg.seed, **cfg.partition_params())


def make_all_samplers(cfg: DPConfig, labels: torch.Tensor):
    """Every rank's sampler (for the simulation, audits and feasibility checks)."""
    from ..data import samplers
    return samplers.make_all(cfg.partition, cfg.nodes, labels.numpy(), seed=cfg.seed, **cfg.partition_params())


def steps_in_epoch(cfg: DPConfig, fewest: int, most: int) -> int:
    """Optimizer steps of an epoch in which the nodes have between ``fewest`` and ``most`` batches: the
    longest node's count, or with ``epoch_end="shortest"`` the shortest's, at most ``epoch_steps``."""
    steps = fewest if cfg.epoch_end == "shortest" else most
    return min(steps, cfg.epoch_steps) if cfg.epoch_steps else steps


def check_feasible(cfg: DPConfig) -> None:
    """Fail in the parent, before any process starts, if some node would get no data."""
    labels = train_labels(cfg)
    for rank, sampler in enumerate(make_all_samplers(cfg, labels)):
        if len(sampler) == 0:
            raise LabError(f"partition {cfg.partition!r} gives node {rank} no samples with {cfg.nodes} nodes "
                           f"and {len(labels)} training samples; use fewer nodes or another partition.")
