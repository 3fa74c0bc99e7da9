"""Matplotlib figures for the lab: one function per figure kind, one module per notebook, every one
following the ``ax=`` convention of ``plots.base`` and returning its Figure. Workers never plot;
notebooks call these on result tables."""
from .cluster import shaped_allreduce, shaped_speedup
from .collectives import comm_bandwidth, comm_costs
from .data_parallel import speedup, speedup_projection, straggler, sync_cost, time_breakdown, time_to_accuracy
from .impact import accuracy_curves, accuracy_vs_coverage, accuracy_vs_skew, strategy_accuracy
from .model_parallel import mp_pipelining, mp_split_profile, mp_timeline, mp_variants, mp_worker_time
from .partitions import label_bars, label_heatmap, node_sizes, partition_overview, sampler_audit, strategy_grid

__all__ = ["accuracy_curves", "accuracy_vs_coverage", "accuracy_vs_skew", "comm_bandwidth", "comm_costs",
           "label_bars", "label_heatmap", "mp_pipelining", "mp_split_profile", "mp_timeline", "mp_variants",
           "mp_worker_time", "node_sizes", "partition_overview", "sampler_audit", "shaped_allreduce", "shaped_speedup", "speedup",
           "speedup_projection", "straggler",
           "strategy_accuracy", "strategy_grid", "sync_cost", "time_breakdown", "time_to_accuracy"]
