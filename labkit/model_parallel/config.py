"""``MPConfig``: a master and two stage workers train one model split in two over RPC."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import LabError
from ..train.config import TrainConfig

ROLES = {0: "the master (rank 0)", 1: "stage 1 (worker1, rank 1)", 2: "stage 2 (worker2, rank 2)"}
COLOCATED_ROLES = {0: "the master with stage 1 (rank 0)", 1: "stage 2 (worker1, rank 1)"}
PLACEMENTS = ("separate", "colocated")
OPTIMIZERS = ("distributed", "local", "deferred")
# Each model's layer count, natural split and Linear layers (index: output neurons), so that a config's split
# is checked without building the model, which needs torch (tests compare this table with models.build).
LAYOUTS = {"lenet5": (10, 7, {7: 120, 9: 10}), "lenet5_bn": (12, 9, {9: 120, 11: 10}),
           "lenet5_gn": (12, 9, {9: 120, 11: 10}), "cnn": (9, 6, {6: 128, 8: 10}),
           "mlp": (10, 5, {1: 784, 3: 784, 5: 784, 7: 784, 9: 10})}


def split_point(layers: int, natural: int, linears: dict[int, int], split: int | None, horizontal: bool) -> int:
    """The layer index a split means for a model of ``layers`` layers; LabError if it cannot be used."""
    at = natural if split is None else split
    if horizontal:
        if at not in linears:
            raise LabError(f"horizontal=True divides a Linear layer's neurons, but layer {at} of this model is "
                           f"{'not a Linear layer' if 0 <= at < layers else 'missing'}; "
                           f"use split= one of {sorted(linears)}.")
        if linears[at] < 2:
            raise LabError(f"layer {at} has a single output neuron; it cannot be divided between two workers.")
    elif not 0 < at < layers:
        raise LabError(f"split point {at} is invalid for a model of {layers} layers; "
                       f"use 1..{layers - 1} (stage 2 starts at that layer).")
    return at


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("", "none", "default") else int(text)


@dataclass(frozen=True)
class MPConfig(TrainConfig):
    """Model parallel over RPC: a master and two stage workers train one model split in two."""

    split: int | None = field(default=None, metadata={"parse": _optional_int, "help": (
        "first layer of stage 2 (or, with --horizontal, the Linear layer to divide); none = the model's natural split")})
    micro_batches: int = field(default=1, metadata={"help": "pipeline each batch in this many equal micro-batches"})
    horizontal: bool = field(default=False, metadata={"help": "divide one Linear layer's neurons between the workers"})
    placement: str = field(default="separate", metadata={"help": (
        "separate: the master and two stage workers, 3 processes (as the course); colocated: the master "
        "hosts stage 1 itself and stage 2 runs on worker1, 2 processes (fewer messages per step)")})
    optimizer: str = field(default="distributed", metadata={"help": (
        "distributed: one DistributedOptimizer over every part's parameter RRefs (as the course); local: each "
        "stage steps its own SGD, all started at once by one asynchronous call per stage; deferred: each stage keeps "
        "the gradients of its backward pass and steps just before its next forward (no optimizer message)")})
    nodes: int = field(default=3, metadata={"help": "processes: 3 (the master and two stage workers), "
                                                    "or 2 with placement=colocated (set for you)"})
    fail_stage: int = field(default=0, metadata={"help": "make stage K fail at its first micro-batch (to see how "
                                                         "failures are reported); 0 = off"})
    fail_mode: str = field(default="raise", metadata={"help": "how fail_stage fails: raise (an exception), "
                                                             "crash (its process dies) or hang (it never answers)"})
    rpc_timeout: float = field(default=120.0, metadata={"help": "seconds one RPC call may wait for its answer "
                                                                "before the run stops with an error"})
    timeout: float = field(default=3600.0, metadata={"help": "stop every process after this many seconds"})

    def __post_init__(self):
        super().__post_init__()
        if self.placement not in PLACEMENTS:
            raise LabError(f"unknown placement {self.placement!r}; choose one of {', '.join(PLACEMENTS)}.")
        if self.optimizer not in OPTIMIZERS:
            raise LabError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}.")
        if self.placement == "colocated":
            if self.horizontal:
                raise LabError("placement='colocated' puts stage 1 on the master, which a horizontal split does not "
                               "have; use placement='separate' with horizontal=True.")
            if self.nodes == 3:   # the default: two processes are what colocated means
                object.__setattr__(self, "nodes", 2)
        if self.nodes != self.processes:
            raise LabError(f"model parallelism with placement={self.placement!r} needs exactly {self.processes} "
                           f"processes, got nodes={self.nodes}; use nodes={self.processes}.")
        if self.micro_batches < 1:
            raise LabError(f"micro_batches must be at least 1, got {self.micro_batches}.")
        if self.batch_size % self.micro_batches:
            raise LabError(f"batch_size {self.batch_size} cannot be cut into {self.micro_batches} equal micro-batches; "
                           f"choose a batch size divisible by {self.micro_batches} "
                           f"(e.g. {self.micro_batches * max(1, self.batch_size // self.micro_batches)}).")
        if self.fail_stage not in (0, 1, 2):
            raise LabError(f"fail_stage must be 0 (off), 1 or 2, got {self.fail_stage}.")
        if self.fail_mode not in ("raise", "crash", "hang"):
            raise LabError(f"fail_mode must be 'raise', 'crash' or 'hang', got {self.fail_mode!r}.")
        for name in ("timeout", "rpc_timeout"):
            if not getattr(self, name) > 0:
                raise LabError(f"{name} must be a positive number of seconds, got {getattr(self, name)}.")
        self.at  # noqa: B018 - a split the model does not have is refused here

    @property
    def processes(self) -> int:
        return 2 if self.placement == "colocated" else 3

    @property
    def roles(self) -> dict[int, str]:
        """What each rank does, for error messages."""
        return COLOCATED_ROLES if self.placement == "colocated" else ROLES

    @property
    def at(self) -> int:
        """The split as a layer index of the model."""
        return split_point(*LAYOUTS[self.model], self.split, self.horizontal)
