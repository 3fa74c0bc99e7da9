"""The messages of a launch, in one place. Each is a small frozen dataclass, pickled by ``channel``.

| message   | from -> to          | says                                                            |
|-----------|---------------------|-----------------------------------------------------------------|
| Hello     | child -> parent     | first message after the token: ``who`` is "supervisor" or a rank |
| Setup     | parent -> rank      | what to run (pickled fn, args, kwargs), with sys.path and cwd    |
| Started   | supervisor -> parent| a rank's process exists, with its pid (so the parent can kill it)|
| Line      | supervisor -> parent| one line a rank printed on stdout or stderr                      |
| Ready     | rank -> parent      | the rank joined the process group (and RPC)                      |
| Report    | rank -> parent      | progress metrics from ``report(**metrics)``                      |
| Result    | rank -> parent      | the rank's return value (cloudpickled)                           |
| Error     | rank -> parent      | the rank raised: a ``Crash`` with type, message and traceback    |
| Exit      | supervisor -> parent| a rank's process ended with this status (negative: a signal)     |
| Done      | supervisor -> parent| every rank is reaped; the supervisor exits                       |
| Bye       | parent -> rank      | every result is in: shut down (RPC gracefully) and exit          |
"""
from __future__ import annotations

import socket
import time
import traceback
from dataclasses import dataclass


@dataclass(frozen=True)
class Crash:
    """What a rank's exception says, in plain data: enough to explain the failure in the parent."""

    type: str
    message: str
    traceback: str
    host: str
    time: float

    @classmethod
    def of(cls, exc: BaseException) -> "Crash":
        return cls(type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)),
                   socket.gethostname(), time.time())


@dataclass(frozen=True)
class Hello:
    who: int | str
    pid: int


@dataclass(frozen=True)
class Setup:
    sys_path: list
    cwd: str
    payload: bytes


@dataclass(frozen=True)
class Started:
    rank: int
    pid: int


@dataclass(frozen=True)
class Line:
    rank: int
    stream: str
    text: str


@dataclass(frozen=True)
class Ready:
    rank: int


@dataclass(frozen=True)
class Report:
    rank: int
    metrics: dict


@dataclass(frozen=True)
class Result:
    rank: int
    value: bytes


@dataclass(frozen=True)
class Error:
    rank: int
    crash: Crash


@dataclass(frozen=True)
class Exit:
    rank: int
    code: int


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class Bye:
    pass
