"""Studies: resumable sweeps over configs x seeds (``sweep``), confidence intervals (``stats``), and
the notebooks' experiments: speed-up (``speedup``), partitioning impact (``impact``) and the
statements computed from its results (``findings``)."""
