"""The node image (docker/Dockerfile): which base, what to stage for the build, and when to rebuild.

The build stages two optional, git-ignored files under build/docker/: the local torch CPU wheel (from
``--wheels``, else pip's own ``$PIP_FIND_LINKS``) and the CA bundle pip must trust (``--cert``, else
``$PIP_CERT``). The image is labelled with a hash of the files that decide its environment, so
``labkit cluster up`` rebuilds it when requirements.lock, pyproject.toml or the Dockerfile change.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from ..errors import LabError
from ..paths import REPO_ROOT
from .compose import IMAGE
from .docker import docker

STANDARD_BASE = "python:3.11-slim"
DEBIAN_BASE = "labkit-base:bookworm"
STAGE = REPO_ROOT / "build" / "docker"
DEPS_LABEL = "org.dml-lab.deps"
DEPS_FILES = ("docker/Dockerfile", "requirements.lock", "pyproject.toml")


def deps_hash() -> str:
    """A short hash of the files that decide the image's environment."""
    digest = hashlib.sha256()
    for name in DEPS_FILES:
        digest.update((REPO_ROOT / name).read_bytes())
    return digest.hexdigest()[:16]


def exists(image: str) -> bool:
    """Whether the daemon has ``image``."""
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def up_to_date(image: str = IMAGE) -> bool:
    """Whether ``image`` exists and was built from the current lock, pyproject and Dockerfile."""
    fmt = "{{ index .Config.Labels \"" + DEPS_LABEL + "\" }}"
    return exists(image) and docker("image", "inspect", "--format", fmt, image, check=False).strip() == deps_hash()


def choose_base(base: str = "", log=print) -> str:
    """``base`` if given; else python:3.11-slim if it is here or can be pulled; else the Debian-built base."""
    if base:
        return base
    if exists(STANDARD_BASE) or subprocess.run(["docker", "pull", STANDARD_BASE], capture_output=True).returncode == 0:
        return STANDARD_BASE
    if not exists(DEBIAN_BASE):
        if shutil.which("mmdebstrap") is None:
            raise LabError(f"cannot pull {STANDARD_BASE} (no image registry?) and mmdebstrap is not installed to "
                           f"build {DEBIAN_BASE} from Debian's packages; install it, or pass --base IMAGE.")
        log(f"{STANDARD_BASE} cannot be pulled here: building {DEBIAN_BASE} from Debian's packages (about 40 s)")
        subprocess.run([str(REPO_ROOT / "docker" / "make-base.sh"), DEBIAN_BASE], check=True)
    return DEBIAN_BASE


def _place(source: Path, target: Path) -> None:
    """``source`` at ``target`` as a hard link (no copy of a 190 MB wheel) or else a copy; kept if the same."""
    if target.exists() and target.stat().st_size == source.stat().st_size:
        return
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def stage(wheels: str = "", cert: str = "") -> list[str]:
    """Fill build/docker/ with the torch wheels and the CA bundle; what was staged, in words."""
    wheels = wheels or os.environ.get("PIP_FIND_LINKS", "").split(" ")[0]
    cert = cert or os.environ.get("PIP_CERT", "")
    (STAGE / "wheels").mkdir(parents=True, exist_ok=True)
    staged = []
    found = sorted(Path(wheels).glob("torch-*.whl")) if wheels and Path(wheels).is_dir() else []
    for whl in found:
        _place(whl, STAGE / "wheels" / whl.name)
        staged.append(f"wheel {whl.name}")
    for old in (STAGE / "wheels").glob("*.whl"):
        if old.name not in {w.name for w in found}:
            old.unlink()
    if cert:
        if not Path(cert).is_file():
            raise LabError(f"CA bundle {cert} does not exist; pass --cert FILE or unset PIP_CERT.")
        _place(Path(cert), STAGE / "ca.pem")
        staged.append(f"CA bundle {cert}")
    else:
        (STAGE / "ca.pem").unlink(missing_ok=True)
    return staged


def build(tag: str = IMAGE, base: str = "", wheels: str = "", cert: str = "", log=print) -> float:
    """Build the node image (docker/Dockerfile, context: the checkout); the seconds it took."""
    start = time.monotonic()
    base = choose_base(base, log)
    staged = stage(wheels, cert)
    log(f"building {tag} from {base}" + (f" with {', '.join(staged)}" if staged else "")
        + " (a first build installs the pinned environment: a few minutes)")
    cmd = ["docker", "build", "-f", str(REPO_ROOT / "docker" / "Dockerfile"), "--build-arg", f"BASE={base}",
           "--label", f"{DEPS_LABEL}={deps_hash()}", "-t", tag, str(REPO_ROOT)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = []
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-15:]
        if line.startswith("Step ") or line.lstrip().startswith("#") and " DONE " not in line:
            log("  " + line.rstrip()[:120])
    if proc.wait():
        raise LabError(f"building {tag} failed; docker's last lines:\n" + "\n".join(tail))
    seconds = time.monotonic() - start
    log(f"{tag} built in {seconds:.0f} s")
    return seconds
