"""Write environment.yml from requirements.lock so conda users get exactly the pinned set."""
from pathlib import Path

root = Path(__file__).resolve().parent.parent
pins = [line.strip() for line in (root / "requirements.lock").read_text().splitlines()
        if line.strip() and not line.startswith("#")]
lines = ["# Generated from requirements.lock by `make lock`; do not edit by hand.",
         "name: dml-lab", "channels:", "  - conda-forge", "dependencies:",
         "  - python=3.11", "  - pip", "  - pip:", "      - -e ."]
lines += [f"      - {pin}" for pin in pins]
(root / "environment.yml").write_text("\n".join(lines) + "\n")
print(f"environment.yml: {len(pins)} pins")
