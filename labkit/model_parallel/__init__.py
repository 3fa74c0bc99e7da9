"""Model parallelism over RPC: ``MPConfig``; cutting the model (``parts``); the stage workers
(``stage``) and the master's step through their RRefs (``driver``); what the processes run
(``tasks``); training, checks and timing from the notebook (``train``); what the events say (``analysis``)."""
from .config import MPConfig
from .train import MPRun, check_step, compare_to_local, local_step, run, time_steps

__all__ = ["MPConfig", "MPRun", "check_step", "compare_to_local", "local_step", "run", "time_steps"]
