"""The in-process simulation used by accuracy sweeps gives the parameters of a real multi-process run."""
import pytest
import torch

from labkit import data_parallel
from labkit.data_parallel import DPConfig, simulate


@pytest.mark.parametrize("kw", [
    dict(sync="allreduce", partition="iid"),
    dict(sync="ddp", partition="sorted"),
    dict(sync="local", partition="dirichlet", alpha=0.5, local_steps=3),
    dict(sync="allreduce", partition="quantity", beta=0.3, nodes=3),
    dict(sync="ddp", partition="quantity", beta=0.5, epoch_end="shortest", eval_every=4, test_subset=500),
    dict(sync="local", partition="label_k", k=1, local_steps=3, epoch_steps=5, eval_every=2, test_subset=500),
])
def test_simulation_matches_real_processes(kw):
    cfg = DPConfig(**{**dict(nodes=2, batch_size=16, train_subset=480, epochs=2, threads=1, seed=1), **kw})
    sim_history, sim_state = simulate(cfg, return_model=True)
    rows, real_state = data_parallel.run(cfg, progress=False, save=False, log=lambda *_: None, return_model=True)
    for key in real_state:
        assert torch.allclose(sim_state[key].float(), real_state[key].float(), atol=1e-5), key
    assert [h["test_acc"] for h in sim_history] == pytest.approx([r["test_acc"] for r in rows], abs=0.02)
    assert [(h["epoch"], h["step"]) for h in sim_history] == [(r["epoch"], r["step"]) for r in rows]
