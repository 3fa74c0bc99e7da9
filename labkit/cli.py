"""The ``labkit`` command. ``labkit run KIND --field value ...`` maps flags onto a config dataclass.

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

from .errors import LabError


def _experiments() -> dict:
    from . import cluster, comm, dataparallel, modelparallel, training
    return {"single": (training.SingleConfig, training.train_single),
            "hello": (cluster.HelloConfig, cluster.run_hello),
            "comm": (comm.CommConfig, comm.run_comm),
            "dp": (dataparallel.DPConfig, dataparallel.run),
            "mp": (modelparallel.MPConfig, modelparallel.train_mp)}


def _torchrun_rank() -> int | None:
    """This process's rank when started by torchrun (``torchrun ... -m labkit run KIND``), else None."""
    from .launcher import under_torchrun
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description="DML Lab: distributed ML experiments on MNIST.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one experiment and append its rows to results/")
    kinds = run.add_subparsers(dest="kind", required=True)
    for name, (config_cls, fn) in _experiments().items():
        p = kinds.add_parser(name, help=(config_cls.__doc__ or "").strip().splitlines()[0])
        add_config_args(p, config_cls)
        if _torchrun_rank() is not None and "nodes" in {f.name for f in dataclasses.fields(config_cls)}:
            p.set_defaults(nodes=int(os.environ["WORLD_SIZE"]))  # under torchrun the job size is torchrun's
        p.add_argument("--no-save", action="store_true", help="do not append rows to results/")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def user_message(exc: LabError) -> str:
    """One line for a user mistake, even when a worker found it; a worker crash keeps its traceback."""
    from .launcher import WorkerError
    if isinstance(exc, WorkerError) and exc.ranks:
        last = (exc.tracebacks.get(exc.ranks[0]) or "").strip().splitlines()[-1:]
        prefix = f"{LabError.__module__}.{LabError.__name__}: "
        if last and last[0].startswith(prefix):
            return f"rank {exc.ranks[0]}: {last[0][len(prefix):]}"
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    try:
        if args.pop("command") == "run":
            config_cls, fn = _experiments()[args.pop("kind")]
            save, progress = not args.pop("no_save"), not args.pop("no_progress")
            if _torchrun_rank() not in (None, 0):  # torchrun: every rank runs this; rank 0 writes results
                save = progress = False
            from .progress import hidden
            with hidden() if not progress else contextlib.nullcontext():
                fn(config_cls(**args), progress=progress, save=save)
        return 0
    except LabError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
