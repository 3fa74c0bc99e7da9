"""ipywidgets explorers for the notebooks. Each has a ``redraw()`` a test can call without a browser.

Figures are rendered to PNG and put into an ``ipywidgets.Output`` as image outputs, so the
picture is the same in JupyterLab, in a headless run and in a test.
"""
from __future__ import annotations

import base64
import io

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np

from ..data import partition as partitioning
from ..data.measures import as_labels, measure
from ..errors import LabError
from . import plots


def _image_output(fig, text: str) -> dict:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"), "text/plain": text}}


def _text_output(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text + "\n"}


class PartitionExplorer:
    """A strategy menu and sliders for nodes, alpha, beta, k and the seed; every change redraws the plots.

    ``figure`` and ``report`` hold what was drawn last; ``message`` the error shown instead, if any.
    """

    def __init__(self, labels, strategy: str = "dirichlet", nodes: int = 10, seed: int = 0, max_nodes: int = 100):
        self.labels = as_labels(labels)
        if strategy not in partitioning.STRATEGIES:
            raise LabError(f"unknown partition strategy {strategy!r}; "
                           f"choose one of: {', '.join(partitioning.STRATEGIES)}.")
        classes = len(np.unique(self.labels))
        top = min(max_nodes, len(self.labels))
        ask = {"continuous_update": False, "style": {"description_width": "initial"}}
        self.strategy = W.Dropdown(options=partitioning.STRATEGIES, value=strategy, description="strategy")
        self.nodes = W.IntSlider(value=min(nodes, top), min=1, max=top, description="nodes", **ask)
        self.alpha = W.FloatLogSlider(value=0.5, base=10, min=-1.3, max=2, step=0.1, description="alpha", **ask)
        self.beta = W.FloatLogSlider(value=0.5, base=10, min=-1.3, max=2, step=0.1, description="beta", **ask)
        self.k = W.IntSlider(value=min(2, classes), min=1, max=classes, description="k", **ask)
        self.seed = W.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed", layout={"width": "160px"})
        self.output = W.Output()
        self.figure = self.report = self.message = None
        self.widget = W.VBox([W.HBox([self.strategy, self.nodes, self.seed]),
                              W.HBox([self.alpha, self.beta, self.k]), self.output])
        for control in (self.strategy, self.nodes, self.alpha, self.beta, self.k, self.seed):
            control.observe(lambda _change: self.redraw(), names="value")
        self.redraw()

    def params(self) -> dict:
        """The slider values the chosen strategy takes (alpha for dirichlet, beta for quantity, k ...)."""
        accepted = partitioning.PARAMS[self.strategy.value]
        values = {"alpha": self.alpha.value, "beta": self.beta.value, "k": self.k.value}
        return {name: value for name, value in values.items() if name in accepted}

    def redraw(self) -> None:
        """Partition with the current settings and replace the Output's content with the new plots."""
        for name in ("alpha", "beta", "k"):
            getattr(self, name).disabled = name not in partitioning.PARAMS[self.strategy.value]
        try:
            parts = partitioning.partition(self.labels, self.nodes.value, self.strategy.value,
                                           seed=self.seed.value, **self.params())
        except LabError as exc:
            self.figure = self.report = None
            self.message = str(exc)
            self.output.outputs = (_text_output(f"error: {exc}"),)
            return
        self.report, self.message = measure(self.labels, parts), None
        settings = ", ".join(f"{k}={v:.3g}" for k, v in self.params().items())
        self.figure = plots.partition_overview(self.report, title=f"{self.strategy.value}"
                                               + (f" ({settings})" if settings else ""))
        plt.close(self.figure)  # shown through the Output only, never twice
        self.output.outputs = (_image_output(self.figure, f"label heatmap, stacked bars and sizes: "
                                                          f"{self.strategy.value}"),)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def partition_explorer(labels, **settings) -> PartitionExplorer:
    """Show a partition explorer over ``labels`` (e.g. MNIST's training labels)."""
    return PartitionExplorer(labels, **settings)
