"""Why `appendfsync always` is the default (settings/parts.py Durability): on a slow disk, a Redis *process* crash
under `everysec` loses writes Redis had answered; under `always` it loses none.

Redis 7.0 under `everysec` fsyncs the AOF in a background thread once a second; while that fsync runs it
postpones writing new commands to the AOF (up to 2 s) but answers them all the same (aof.c,
flushAppendOnlyFile). A SIGKILL then loses what it answered. A slow disk is made here with an LD_PRELOAD shim
(slow_fsync.c: every fdatasync waits 300 ms first), and Redis is killed 150 ms after a second begins, inside
the fsync that second starts. Four clients push without pause and count what Redis acknowledged; after the
restart from the AOF, every acknowledged push must be there.

If a Redis upgrade stops answering postponed writes (7.2 added WAITAOF; re-read flushAppendOnlyFile), the
everysec assertion fails: then the default can be revisited.
"""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from inferq.stack.redis_server import RedisServer
from tests.figures import record

pytestmark = pytest.mark.slow

SHIM = Path(__file__).with_name("slow_fsync.c")
ROUNDS = 2
CLIENTS = 4
KILL_INTO_SECOND = 0.15
"""When, after a wall-clock second begins, Redis is killed: inside the background fsync that second starts."""


@pytest.fixture(scope="module")
def slow_fsync(tmp_path_factory) -> Path:
    """The shim, built here (a C compiler is one of scripts/system-deps.sh's packages; no headers needed)."""
    built = tmp_path_factory.mktemp("shim") / "slow_fsync.so"
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "no C compiler: run scripts/system-deps.sh"
    subprocess.run([compiler, "-shared", "-fPIC", "-nostdlib", "-o", str(built), str(SHIM)], check=True)
    return built


def crash_on_a_slow_disk(root: Path, mode: str, shim: Path, monkeypatch) -> tuple[int, int]:
    """Push from CLIENTS clients, SIGKILL Redis inside a background fsync, restart it from its AOF: (pushes Redis
    acknowledged, of those the ones the AOF lost)."""
    server = RedisServer(root, appendfsync=mode)
    with monkeypatch.context() as patched:
        patched.setenv("LD_PRELOAD", str(shim))  # only the Redis started here inherits it
        server.start()
    acknowledged: list[str] = []
    stop = threading.Event()

    def client(number: int) -> None:
        connection = server.client()
        pushed = 0
        while not stop.is_set():
            pushed += 1
            try:
                connection.lpush("pushed", f"{number}.{pushed}")
            except redis.RedisError:
                return
            acknowledged.append(f"{number}.{pushed}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.2)
        now = time.time()
        time.sleep(int(now) + 1 + KILL_INTO_SECOND - now)
        server.kill()
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    server.start()
    try:
        kept = {item.decode() for item in server.client().lrange("pushed", 0, -1)}
    finally:
        server.stop()
    return len(acknowledged), sum(item not in kept for item in acknowledged)


def test_a_redis_crash_on_a_slow_disk_loses_nothing_under_always_and_answered_writes_under_everysec(
        tmp_path, slow_fsync, monkeypatch):
    rounds = {mode: [crash_on_a_slow_disk(tmp_path / f"{mode}-{n}", mode, slow_fsync, monkeypatch)
                     for n in range(ROUNDS)] for mode in ("everysec", "always")}
    record("Redis SIGKILLed on a slow disk (fdatasync 300 ms)",
           **{f"{mode}_acknowledged": [a for a, _ in r] for mode, r in rounds.items()},
           **{f"{mode}_lost": [lost for _, lost in r] for mode, r in rounds.items()})
    assert all(acknowledged > 0 for r in rounds.values() for acknowledged, _ in r), rounds
    assert all(lost == 0 for _, lost in rounds["always"]), rounds  # the default: nothing answered is lost
    assert all(lost > 0 for _, lost in rounds["everysec"]), rounds  # Redis's behaviour the default rests on
