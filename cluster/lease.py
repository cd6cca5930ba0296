"""Leases on steps: two processes that need the same step (two `metaicl run`s of one config, two sweeps that share a
pretrained model) never make it both; one makes it, the other waits and reuses it.

    with Leases(echo) as leases:
        mine = leases.claim(steps)      # the steps this process makes now; the others are someone else's

A lease is a file beside the step's directory, `.<name>.lease`, created exclusively (O_CREAT | O_EXCL: one
process wins on any POSIX file system) and holding who made it (host, pid). The holder touches it every
HEARTBEAT_S seconds; a lease whose holder is gone (same host: no such pid; another host: no touch for STALE_S)
is taken over, so a killed run never blocks the next one. Released when the holder is done, made or not.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable

HEARTBEAT_S = 5.0
STALE_S = 60.0


def lease_path(where: Path) -> Path:
    return where.parent / f".{where.name}.lease"


def holder(path: Path) -> str:
    """Who the lease at `path` names: `host pid N`."""
    try:
        info = json.loads(path.read_text())
        return f"{info['host']} pid {info['pid']}"
    except (OSError, ValueError, KeyError):
        return "unknown"


def holder_alive(path: Path) -> bool:
    """Whether the process named in the lease at `path` still holds it."""
    try:
        info = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return False  # gone, or half-written by a holder that died at once: nobody holds it
    if info.get("host") != socket.gethostname():
        return age < STALE_S
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class Leases:
    """The leases this process holds, kept fresh by one heartbeat thread, all released on exit."""

    def __init__(self, echo: Callable[[str], None] = print):
        self.echo, self.held, self._stop = echo, [], threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> "Leases":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for path in self.held:
            path.unlink(missing_ok=True)
        self.held.clear()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            for path in list(self.held):
                try:
                    os.utime(path)
                except OSError:
                    pass

    def try_claim(self, where: Path) -> bool:
        """Take the lease on the step at `where` if nobody holds it (a stale one is taken over)."""
        path = lease_path(where)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if holder_alive(path):
                    return False
                self.echo(f"{where.name}: the process that was making it ({holder(path)}) is gone; taking it over "
                          f"(a training step resumes from its latest checkpoint)")
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, f)
            self.held.append(path)
            return True
        return False

    def release(self, where: Path) -> None:
        path = lease_path(where)
        if path in self.held:
            self.held.remove(path)
            path.unlink(missing_ok=True)

    def claim(self, steps: list, wait_s: float = 1.0) -> list:
        """The steps of `steps` (not done) that this process should make now: those it could lease. When it can
        lease none, it waits until another holder finishes (or dies) and tries again; returns [] once every step
        is done."""
        said = set()
        while True:
            pending = [s for s in steps if not s.done]
            mine = [s for s in pending if self.try_claim(s.where)]
            for step in [s for s in mine if s.done]:  # finished by another process just before we leased it
                self.release(step.where)
            mine = [s for s in mine if not s.done]
            if mine or not pending:
                return mine
            for step in pending:
                if step.where not in said:
                    self.echo(f"{step.name}: another process is making {step.where}; waiting for it")
                    said.add(step.where)
            time.sleep(wait_s)
