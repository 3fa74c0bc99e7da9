"""labkit's layout keeps the shape the README's module map describes: every module imports only from
its own layer or the layers below, nothing imports in a circle, no module reaches into another's
private names, no module is longer than one sitting's read, and no code is written twice."""
import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "labkit"
# Lowest first. A module may import from its own layer and from any layer before it.
LAYERS = ["errors", "lazy", "paths", "environment", "results", "runtime", "data", "train", "collectives", "cluster",
          "data_parallel", "model_parallel", "studies", "exercises", "notebook", "course", "cli", "__main__", "__init__"]
MAX_LINES = 300


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package's ``__init__`` under the package's name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = modules()


def layer(name: str) -> int:
    """The layer of a module: its top-level unit's place in LAYERS."""
    unit = name.split(".")[1] if "." in name else "__init__"
    return LAYERS.index(unit)


def _absolute(name: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import of labkit code, lazy ones included."""
    path = MODULES[name]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names if alias.name.startswith("labkit")]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(name, path, node)
            if not source.startswith("labkit"):
                continue
            for alias in node.names:
                child = f"{source}.{alias.name}"
                if child in MODULES:  # `from package import module`
                    found.append((child, [], node.lineno))
                else:
                    found.append((source, [alias.name], node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    edges = defaultdict(set)
    for name in MODULES:
        for target, _, _ in imports(name):
            assert target in MODULES, f"{name} imports {target}, which is not a labkit module"
            if target != name:
                edges[name].add(target)
    return edges


def test_the_layer_list_names_every_top_level_unit():
    units = {name.split(".")[1] if "." in name else "__init__" for name in MODULES}
    assert units == set(LAYERS), f"update LAYERS (and the README's module map): {units ^ set(LAYERS)}"


def test_no_module_imports_from_a_layer_above_it():
    upward = [f"{name} (layer {LAYERS[layer(name)]}) imports {target} (layer {LAYERS[layer(target)]}) "
              f"at line {line}" for name in MODULES for target, _, line in imports(name) if layer(target) > layer(name)]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    edges, state, cycles = graph(), {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"
    for name in MODULES:
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checks_above_can_fail():
    """The layer and cycle checks see lazy imports, relative imports and `from package import module`."""
    assert ("labkit.runtime", ["under_torchrun"]) in [(t, n) for t, n, _ in imports("labkit.cli")]  # lazy
    assert "labkit.data.batches" in {t for t, _, _ in imports("labkit.data.samplers")}            # relative
    assert "labkit.data_parallel.sync" in graph()["labkit.data_parallel.train"]                   # module
    assert layer("labkit.runtime.job") < layer("labkit.data.samplers") < layer("labkit.course.grade")


def test_no_private_name_is_used_across_modules():
    found = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = set()
        for target, names, line in imports(name):
            found += [f"{name}:{line} imports {target}.{n}" for n in names
                      if n.startswith("_") and not n.startswith("__")]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _absolute(name, path, node).startswith("labkit"):
                aliases |= {a.asname or a.name for a in node.names
                            if f"{_absolute(name, path, node)}.{a.name}" in MODULES}
            elif isinstance(node, ast.Import):
                aliases |= {a.asname for a in node.names if a.name.startswith("labkit.") and a.asname}
        found += [f"{name}:{node.lineno} uses {node.value.id}.{node.attr}" for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_is_short_and_says_what_it_is_for(name):
    text = MODULES[name].read_text()
    assert len(text.splitlines()) <= MAX_LINES, f"{name} has {len(text.splitlines())} lines; split it by job"
    assert ast.get_docstring(ast.parse(text)) or name.endswith("__main__"), f"{name} has no docstring"


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text with white space folded) of the lines that carry code: no blank lines,
    comments, docstring-only lines, imports or lone brackets."""
    kept = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = " ".join(raw.split("#")[0].split()) if '"' not in raw and "'" not in raw else " ".join(raw.split())
        if not line or line.startswith(("import ", "from ", '"""', "#")) or re.fullmatch(r"[\[\](){}:,]*", line):
            continue
        kept.append((number, line))
    return kept


def test_no_six_lines_of_code_are_written_twice():
    """A simple duplicate check: the same six consecutive code lines in two places of labkit."""
    seen, repeats = {}, []
    for name, path in MODULES.items():
        lines = _code_lines(path)
        for i in range(len(lines) - 5):
            window = tuple(text for _, text in lines[i:i + 6])
            where = f"{name}:{lines[i][0]}"
            if window in seen:
                repeats.append(f"{where} repeats {seen[window]}")
            seen.setdefault(window, where)
    assert not repeats, "\n".join(repeats)


def test_every_plot_takes_ax_and_draws_where_it_is_told():
    """One convention for figures: ``ax=None`` on every function; a multi-panel figure draws into the
    axes it is given (and says how many it needs)."""
    import inspect

    import matplotlib
    import matplotlib.pyplot as plt
    matplotlib.use("Agg")
    from labkit.data import measures, partition
    from labkit.errors import LabError
    from labkit.notebook import plots
    for name in plots.__all__:
        parameter = inspect.signature(getattr(plots, name)).parameters.get("ax")
        assert parameter is not None and parameter.default is None, f"plots.{name} has no ax=None"
    labels = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]
    report = measures.measure(labels, partition.partition(labels, 3, "iid"))
    fig, axes = plt.subplots(2, 3)
    assert plots.partition_overview(report, ax=axes[1]) is fig
    assert all(ax.has_data() for ax in axes[1]) and not any(ax.has_data() for ax in axes[0])
    assert plots.node_sizes(report, ax=axes[0][0]) is fig and axes[0][0].has_data()
    with pytest.raises(LabError, match="3 panels"):
        plots.partition_overview(report, ax=axes[0][:2])
    plt.close("all")
