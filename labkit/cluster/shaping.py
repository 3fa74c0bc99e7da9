"""Slower links with ``tc``: a rate ("100mbit", "1gbit") and a latency ("5ms") on a node's egress.

Every node shapes its own outgoing traffic, so a link between two shaped nodes is slow both ways.
Rate uses ``tbf`` (token bucket), which every Linux kernel has; latency needs ``netem``, which some
kernels lack (this development machine's among them): then ``apply`` says so in one line. The same
commands run inside a container (``dev="eth0"``, NET_ADMIN) or in a network namespace (``netns=...``).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from ..errors import LabError

RATE_UNITS = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
DELAY_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
NO_NETEM = "this kernel has no netem (sch_netem), so latency cannot be emulated here; leave out --latency"


def _amount(text, units: dict, what: str, example: str) -> float:
    """'100mbit' with RATE_UNITS -> 1e8; '' or None -> 0; a clear LabError for anything else."""
    if text in (None, ""):
        return 0.0
    match = re.fullmatch(r"\s*([-+]?[0-9]*\.?[0-9]+)\s*([a-z]+)\s*", str(text).lower())
    if not match or match.group(2) not in units:
        raise LabError(f"cannot read {what} {text!r}; write a number and a unit ({', '.join(units)}), "
                       f"e.g. {example}.")
    value = float(match.group(1)) * units[match.group(2)]
    if value <= 0:
        raise LabError(f"{what} must be positive, got {text!r}; leave it out for an unshaped link.")
    return value


def parse_rate(text) -> float:
    """'100mbit' -> 1e8 bits per second ('' -> 0: unshaped). Units kbit, mbit, gbit, as tc writes them."""
    return _amount(text, RATE_UNITS, "bandwidth", "100mbit, 1gbit or 10gbit")


def parse_delay(text) -> float:
    """'5ms' -> 0.005 seconds ('' -> 0: no added latency). Units us, ms, s."""
    return _amount(text, DELAY_UNITS, "latency", "5ms or 200us")


def describe_rate(bits: float) -> str:
    """1e8 -> '100 Mbit/s'."""
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits >= scale:
            return f"{bits / scale:g} {unit}"
    return f"{bits:g} bit/s"


@dataclass(frozen=True)
class Shape:
    """What to do to one interface: ``rate`` in bit/s and ``delay`` in seconds (0 = leave as is)."""

    rate: float = 0.0
    delay: float = 0.0

    @classmethod
    def parse(cls, bandwidth="", latency="") -> "Shape":
        """From the command line's --bandwidth and --latency (either may be empty)."""
        return cls(parse_rate(bandwidth), parse_delay(latency))

    def __bool__(self) -> bool:
        """Whether there is anything to shape."""
        return bool(self.rate or self.delay)

    def __str__(self) -> str:
        """'100 Mbit/s, +5 ms' or 'unshaped', for the nodes' start-up lines."""
        parts = ([describe_rate(self.rate)] if self.rate else []) + ([f"+{self.delay * 1e3:g} ms"] if self.delay else [])
        return ", ".join(parts) or "unshaped"


def tbf_args(rate: float) -> list[str]:
    """tbf at ``rate`` bit/s: a burst of 1 ms at that rate (at least 16 KiB), a queue of 50 ms."""
    burst = max(16 * 1024, int(rate / 8 * 1e-3))
    return ["tbf", "rate", f"{int(rate)}bit", "burst", str(burst), "latency", "50ms"]


def tc_commands(dev: str, shape: Shape) -> list[list[str]]:
    """The ``tc`` command lines that give ``dev`` this shape (root qdisc replaced; netem above tbf)."""
    if not shape:
        return []
    if not shape.delay:
        return [["tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", *tbf_args(shape.rate)]]
    netem = ["tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "netem", "delay",
             f"{shape.delay * 1e6:.0f}us"]
    rate = [["tc", "qdisc", "add", "dev", dev, "parent", "1:", "handle", "10:", *tbf_args(shape.rate)]]
    return [netem] + (rate if shape.rate else [])


def _in(netns: str | None, cmd: list[str]) -> list[str]:
    """``cmd`` run inside network namespace ``netns`` (None: here)."""
    return ["ip", "netns", "exec", netns, *cmd] if netns else cmd


def apply(dev: str, shape: Shape, netns: str | None = None) -> str:
    """Shape ``dev`` (inside ``netns`` if given); the qdisc now on it. LabError saying why it could not."""
    if shape and shutil.which("tc") is None:
        raise LabError("`tc` is not installed (Debian/Ubuntu: apt-get install iproute2); it shapes the links.")
    for cmd in tc_commands(dev, shape):
        proc = subprocess.run(_in(netns, cmd), capture_output=True, text=True)
        if proc.returncode:
            clear(dev, netns)
            err = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            if "netem" in cmd and "unknown" in err[0].lower():
                raise LabError(NO_NETEM + (" (--bandwidth alone works)." if shape.rate else "."))
            if "not permitted" in err[0].lower():
                raise LabError(f"tc may not change {dev}: it needs root or the NET_ADMIN capability "
                               "(Docker: cap_add NET_ADMIN).")
            raise LabError(f"`{' '.join(cmd)}` failed: {err[0]}")
    return show(dev, netns)


def clear(dev: str, netns: str | None = None) -> None:
    """Back to the kernel's default queue on ``dev`` (an unshaped link); quiet if nothing was set."""
    subprocess.run(_in(netns, ["tc", "qdisc", "del", "dev", dev, "root"]), capture_output=True)


def show(dev: str, netns: str | None = None) -> str:
    """``tc qdisc show dev DEV`` in one line per qdisc."""
    return subprocess.run(_in(netns, ["tc", "qdisc", "show", "dev", dev]), capture_output=True,
                          text=True).stdout.strip()

