"""Model parallelism over RPC: ``MPConfig``; cutting the model (``parts``); the stage workers
(``stage``) and the master's step through their RRefs (``driver``); what the processes run
(``tasks``); training, checks and timing from the notebook (``train``); what the events say (``analysis``)."""
from ..lazy import exports

_WHERE = {"MPConfig": "config", **{name: "train" for name in ("MPRun", "VARIANTS", "check_step", "compare_to_local",
                                                              "compare_variants", "local_step", "run", "time_steps")}}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = exports(__name__, _WHERE)  # the config without torch: the command line stays instant
