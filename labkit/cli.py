"""The ``labkit`` command. ``labkit run KIND --field value ...`` maps flags onto a config dataclass;
``labkit report`` executes every notebook into results/, ``labkit grade`` checks student notebooks,
``labkit release`` writes the student release, ``labkit autograde`` grades a class.

Each experiment kind registers ``(ConfigClass, run_function)`` in ``EXPERIMENTS``; flags are
generated from the dataclass fields, so the CLI and the notebooks share one set of defaults.
A ``LabError`` is printed as one line (``error: ...``) with exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import typing

from .errors import LabError, WorkerError


# Each kind: where its config class is and where its ``run(cfg, progress, save)`` is. Config modules are
# light (no torch), so flags are parsed and checked before anything heavy is imported.
EXPERIMENTS = {"single": ("train.config:SingleConfig", "train.single:run"),
               "hello": ("collectives.hello:HelloConfig", "collectives.hello:run"),
               "comm": ("collectives.bench:CommConfig", "collectives.bench:run"),
               "dp": ("data_parallel.config:DPConfig", "data_parallel.train:run"),
               "mp": ("model_parallel.config:MPConfig", "model_parallel.train:run")}


def _load(where: str):
    """``"module:name"`` (under labkit) -> the object."""
    import importlib
    module, name = where.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


def _torchrun_rank() -> int | None:
    """This process's rank when started by torchrun (``torchrun ... -m labkit run KIND``), else None."""
    from .runtime import under_torchrun
    return int(os.environ["RANK"]) if under_torchrun() else None


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_config_args(parser: argparse.ArgumentParser, config_cls) -> None:
    """One ``--flag`` per dataclass field, typed from the field's default or its ``parse`` metadata."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        parse = f.metadata.get("parse")
        if parse is None:
            kind = hints[f.name]
            parse = {bool: _parse_bool, int: int, float: float}.get(kind, str)
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=parse, default=default,
                            help=f"{f.metadata.get('help', '')} (default: {default})".strip())


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistaken flag is one line that says where to look, not the whole usage."""

    def error(self, message):
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="labkit", description="DML Lab: distributed ML experiments on MNIST.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one experiment and append its rows to results/")
    kinds = run.add_subparsers(dest="kind", required=True)
    for name, (config_at, _) in EXPERIMENTS.items():
        config_cls = _load(config_at)
        p = kinds.add_parser(name, help=(config_cls.__doc__ or "").strip().splitlines()[0])
        add_config_args(p, config_cls)
        if _torchrun_rank() is not None and "nodes" in {f.name for f in dataclasses.fields(config_cls)}:
            p.set_defaults(nodes=int(os.environ["WORLD_SIZE"]))  # under torchrun the job size is torchrun's
        p.add_argument("--no-save", action="store_true", help="do not append rows to results/")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_report_and_grade(sub)
    _add_release_and_autograde(sub)
    sub.add_parser("cluster", add_help=False, help="one Docker container per node (docker compose), links you "
                                                    "can slow down: labkit cluster up|run|status|down|build --help")
    return parser


def user_message(exc: LabError) -> str:
    """One line for a user mistake, even when a worker found it; a worker crash keeps its traceback."""
    if isinstance(exc, WorkerError) and exc.ranks:
        last = (exc.tracebacks.get(exc.ranks[0]) or "").strip().splitlines()[-1:]
        prefix = f"{LabError.__module__}.{LabError.__name__}: "
        if last and last[0].startswith(prefix):
            return f"rank {exc.ranks[0]}: {last[0][len(prefix):]}"
    return str(exc)


def _add_report_and_grade(sub) -> None:
    from .course.report import ReportConfig
    report = sub.add_parser("report", help="execute every notebook headless and collect results/ (make results)")
    report.add_argument("--quick", action="store_true", help="pass quick=True to every notebook (a smoke run)")
    report.add_argument("--only", action="append", default=[], metavar="NAMES",
                        help="run only these notebooks, e.g. --only 02,03 (number, name or file name)")
    report.add_argument("--out", default="", help="results folder (default: $LABKIT_RESULTS, else results/)")
    report.add_argument("--notebooks", default=ReportConfig.notebooks, help="folder of NN_*.ipynb notebooks")
    report.add_argument("--timeout", type=int, default=ReportConfig.timeout,
                        help=f"seconds one cell may run (default: {ReportConfig.timeout})")
    report.add_argument("--jobs", type=int, default=0, help="notebooks run at once (default: 2 with --quick, else 1: "
                        "notebooks that run together slow each other's timings down)")
    grade = sub.add_parser("grade", help="check executed student notebooks against the reference run")
    grade.add_argument("submissions", nargs="+", metavar="SUBMISSION", help="executed notebooks or folders of them")
    grade.add_argument("--reference", default=None, help="results folder of the reference run (default: results/)")
    grade.add_argument("--csv", default="grades.csv", help="where to write the table (default: grades.csv)")


def _add_release_and_autograde(sub) -> None:
    from .course.sandbox import Limits
    release = sub.add_parser("release", help="write the student release (skeletons, no hidden tests); "
                                              "never overwrites a notebook already there")
    release.add_argument("--into", default="", help="folder for the release (default: student/ in the checkout)")
    auto = sub.add_parser("autograde", help="grade a class: SUBMISSIONS/<student>/<notebook>.ipynb")
    auto.add_argument("submissions", metavar="SUBMISSIONS_DIR", help="one folder per student with its notebooks")
    auto.add_argument("--out", default="autograde", help="where gradebook.csv, points.csv and feedback/ go "
                                                         "(default: autograde/)")
    auto.add_argument("--jobs", type=int, default=2, help="students graded at the same time (default: 2)")
    auto.add_argument("--timeout", type=float, default=Limits.timeout,
                      help=f"seconds a student's code may run per notebook (default: {Limits.timeout:g})")
    auto.add_argument("--memory", type=int, default=Limits.memory_mb,
                      help=f"MB a student's processes may use together (default: {Limits.memory_mb})")
    auto.add_argument("--reference", default=None, help="results folder of the reference run (default: results/)")
    auto.add_argument("--source", default=None, help="folder of the source notebooks (default: notebooks/)")


def _release(args: dict) -> int:
    from .course import release
    print(release.release(args["into"] or None).summary())
    return 0


def _autograde(args: dict) -> int:
    from .course import autograde, sandbox
    cfg = autograde.AutogradeConfig(args["submissions"], out=args["out"], jobs=args["jobs"],
                                    limits=sandbox.Limits(timeout=args["timeout"], memory_mb=args["memory"]),
                                    reference=args["reference"], **({"source": args["source"]} if args["source"] else {}))
    grades = autograde.run(cfg)
    flagged = sum(bool(g.flags) for g in grades)
    mean = sum(100 * g.total / g.max for g in grades if g.max) / len(grades)
    print(f"graded {len(grades)} students (mean {mean:.1f} %, {flagged} with flags); "
          f"{cfg.out}/gradebook.csv, points.csv and feedback/")
    return 0


def _report(args: dict) -> int:
    from .course import report
    only = tuple(name.strip() for names in args["only"] for name in names.split(",") if name.strip())
    cfg = report.ReportConfig(quick=args["quick"], only=only, out=args["out"], notebooks=args["notebooks"],
                              timeout=args["timeout"], jobs=args["jobs"])
    runs = report.run(cfg)
    failed = [r for r in runs if not r.ok]
    print(f"{len(runs) - len(failed)} of {len(runs)} notebooks ran OK; results in {cfg.out} (README.md there)")
    for r in failed:
        print(f"FAILED {r.name}: {r.line()}", file=sys.stderr)
    return 1 if failed else 0


def _grade(args: dict) -> int:
    from .course import grade
    table = grade.grade(args["submissions"], args["reference"])
    print(grade.format_table(table))
    for note in grade.reference_notes(args["reference"]):
        print(note)
    table.to_csv(args["csv"], index=False)
    passed = int((table["result"] == "pass").sum())
    print(f"{passed} of {len(table)} passed every check; table written to {args['csv']}")
    return 0 if passed == len(table) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["cluster"]:  # its own parser: everything after `--` is the job's labkit command line
        from .cluster.cli import main as cluster_main
        return cluster_main(argv[1:])
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    try:
        command = args.pop("command")
        if command == "report":
            return _report(args)
        if command == "grade":
            return _grade(args)
        if command in ("release", "autograde"):
            return {"release": _release, "autograde": _autograde}[command](args)
        if command == "run":
            config_at, run_at = EXPERIMENTS[args.pop("kind")]
            save, progress = not args.pop("no_save"), not args.pop("no_progress")
            cfg = _load(config_at)(**args)  # a bad value is refused here, before torch is imported
            if _torchrun_rank() not in (None, 0):  # torchrun: every rank runs this; rank 0 writes results
                save = progress = False
            from .runtime.progress import hidden
            with hidden() if not progress else contextlib.nullcontext():
                _load(run_at)(cfg, progress=progress, save=save)
        return 0
    except LabError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
