"""Training on one machine: the lab's models (each knows its two stages), the config fields every
training kind shares (``TrainConfig``), the shared loop pieces, and the single-process baseline."""
