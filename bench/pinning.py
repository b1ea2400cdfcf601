"""CPU pinning for the reference-layout stage: every thread of a process tree onto a set of cores.

``os.sched_setaffinity`` moves one thread; a process that already runs threads
(gunicorn's, Redis's I/O threads, onnxruntime's pool) needs each of them moved,
and threads started later inherit the affinity of the thread that starts them.
"""
from __future__ import annotations

import os

import psutil


def pin(pid: int, cpus: set[int], children: bool = True) -> None:
    """Put every thread of pid (and of its children) on cpus."""
    process = psutil.Process(pid)
    for proc in [process, *(process.children(recursive=True) if children else [])]:
        try:
            for thread in proc.threads():
                try:
                    os.sched_setaffinity(thread.id, cpus)
                except (ProcessLookupError, PermissionError):
                    pass  # a thread that ended meanwhile
        except psutil.NoSuchProcess:
            pass


def all_cpus() -> set[int]:
    """Every core this machine has (to undo a pin)."""
    return set(range(os.cpu_count() or 1))
