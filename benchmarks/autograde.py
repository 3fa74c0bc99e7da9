"""Time `labkit autograde` on a generated class of the whole lab (target: 100 submissions in 30 minutes).

Each submission is the reference run's executed notebooks (results/notebooks) with the solution notebooks'
solution cells; every fifth student has one exercise left as its stub and every seventh a sampler seeded
per rank, so the class mixes passing and failing checks. Prints the total time, the time per submission
and the projection for 100.
Usage: python benchmarks/autograde.py [--students 100] [--jobs 2] [--keep DIR]
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "autograde"))
import classgen  # noqa: E402

from labkit.course import autograde, exercise_grading, sandbox  # noqa: E402
from labkit.course.report import discover  # noqa: E402


def make_class(folder: Path, students: int) -> None:
    """``students`` submissions of every notebook, some with a mistake."""
    sources = {p.stem: nbformat.read(p, as_version=4) for p in discover(ROOT / "notebooks")}
    ok = {name: classgen.executed_with_solutions(nbformat.read(ROOT / "results" / "notebooks" / f"{name}.ipynb",
                                                               as_version=4), nb) for name, nb in sources.items()}
    exercises = [(name, c) for name, nb in sources.items() for c in nb.cells if exercise_grading.is_solution(c)]
    for k in range(students):
        notebooks = dict(ok)
        if k % 5 == 4 and exercises:
            name, cell = exercises[k % len(exercises)]
            notebooks[name] = classgen.set_solution(notebooks[name], classgen.meta(cell)["grade_id"],
                                                    exercise_grading.stub(cell))
        if k % 7 == 6 and "02_data_partitioning" in notebooks:
            nb = notebooks["02_data_partitioning"]
            cell = classgen.solutions(nb).get("RandomPartitionSampler", "")
            notebooks["02_data_partitioning"] = classgen.set_solution(
                nb, "RandomPartitionSampler", cell.replace("+ self.epoch)", "+ self.epoch + self.rank)"))
        classgen.write_student(folder, f"student{k:03d}", notebooks)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", default="", help="write the class and the grades here (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="labkit-autograde-bench-") as tmp:
        base = Path(args.keep or tmp)
        make_class(base / "submissions", args.students)
        start = time.monotonic()
        grades = autograde.run(autograde.AutogradeConfig(str(base / "submissions"), out=str(base / "out"),
                                                         jobs=args.jobs, limits=sandbox.Limits()))
        total = time.monotonic() - start
    per = total / len(grades)
    mean = sum(100 * g.total / g.max for g in grades) / len(grades)
    print(f"graded {len(grades)} submissions of {len(discover(ROOT / 'notebooks'))} notebooks with {args.jobs} jobs "
          f"on {os.cpu_count()} cores in {total:.0f} s ({total / 60:.1f} min); {per:.1f} s per submission; "
          f"mean {mean:.1f} %")
    print(f"projection for 100 submissions: {100 * per / 60:.1f} min (target: 30 min)")


if __name__ == "__main__":
    main()
