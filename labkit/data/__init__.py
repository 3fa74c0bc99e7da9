"""The data side of the lab: MNIST / Fashion-MNIST in memory (``datasets``), epoch orders and batches
(``batches``), partition strategies as pure functions (``partition``), measures of any split
(``measures``), per-rank samplers (``samplers``) and the in-process sampler audit (``audit``).
"""
