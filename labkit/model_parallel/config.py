"""``MPConfig``: a master and two stage workers train one model split in two over RPC."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import LabError
from ..train.config import TrainConfig

ROLES = {0: "the master (rank 0)", 1: "stage 1 (worker1, rank 1)", 2: "stage 2 (worker2, rank 2)"}


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("", "none", "default") else int(text)


@dataclass(frozen=True)
class MPConfig(TrainConfig):
    """Model parallel over RPC: a master and two stage workers train one model split in two."""

    split: int | None = field(default=None, metadata={"parse": _optional_int, "help": (
        "first layer of stage 2 (or, with --horizontal, the Linear layer to divide); none = the model's natural split")})
    micro_batches: int = field(default=1, metadata={"help": "pipeline each batch in this many equal micro-batches"})
    horizontal: bool = field(default=False, metadata={"help": "divide one Linear layer's neurons between the workers"})
    nodes: int = field(default=3, metadata={"help": "processes: the master and two stage workers"})
    fail_stage: int = field(default=0, metadata={"help": "make stage K fail at its first micro-batch (to see how "
                                                         "failures are reported); 0 = off"})
    fail_mode: str = field(default="raise", metadata={"help": "how fail_stage fails: raise (an exception) or "
                                                             "crash (its process dies)"})
    timeout: float = field(default=3600.0, metadata={"help": "stop every process after this many seconds"})

    def __post_init__(self):
        super().__post_init__()
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
        self.at  # noqa: B018 - a split the model does not have is refused here

    @property
    def at(self) -> int:
        """The split as a layer index of the model (builds the model: torch is imported only here)."""
        from ..train import models
        from .parts import resolve_split
        return resolve_split(models.build(self.model), self.split, self.horizontal)
