"""A randomized crash checker: clients submit without pause while a seeded schedule injects faults, then the
whole history is checked (as Jepsen's queue tests do).

Four or more clients submit jobs in closed loops (single texts, and bulk jobs of
several texts that run in more than one forward pass) and record every ``202``.
Meanwhile a schedule drawn from a seed injects faults at random instants:
SIGKILL Redis (``appendfsync always``, the default; restarted from its AOF),
SIGSTOP Redis for 0.5-3 s, SIGKILL a worker (running or still
starting), SIGTERM a worker, SIGKILL the API (running or still starting). With
``replicated`` (a primary, a replica and three Sentinels: tests/reliability/replicated.py)
the Redis faults are SIGKILL the primary (the Sentinels promote the replica; the old
primary comes back as its replica) and SIGSTOP the primary for 0.5-3 s (long enough,
past one second, for a failover while it is frozen). A killed process is started
again as a supervisor would (the same name, the same port). Then, every service
back, the checker waits for each accepted job's final state and verifies that

- every accepted job ended succeeded (``lost`` counts those that did not),
- with the result its texts give, computed here with the same model
  (``wrong``), and no two runs of a job stored different results (``wrong`` too),

and counts the jobs that ran more than once (``ran_twice``: allowed, reported).
Runs are counted from the workers' run logs (tasks/faults.record_runs), which
survive what Redis forgets.

    python -m tests.reliability.checker --minutes 30 [--seed N]     # make soak MINUTES=30
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import redis
import requests

from inferq import contract
from inferq.contract import WORKERS_KEY
from inferq.stack import processes
from inferq.stack.redis_server import free_port
from tests import holders
from tests.reliability.replicated import ReplicatedStack
from tests.reliability.stack import FAULT_ENV, HOST, Stack

WORKERS = ("w1", "w2")
CLIENTS = 4
BATCH_SIZE = 4
"""Small, so that the bulk jobs (up to INFERQ_MAX_TEXTS = 8 texts) run in several passes."""

CHECKER_ENV = {
    **FAULT_ENV,
    "INFERQ_BATCH_SIZE": str(BATCH_SIZE),
    # fp32: a text's probabilities are the same in any batch, to 1e-6, so a result can be checked
    # exactly; int8 quantizes each batch's activations with scales of its own.
    "INFERQ_PRECISION": "onnx-fp32",
    # Faults here kill workers at random, not because of a job's input: no job is a poison job.
    "INFERQ_MAX_DELIVERIES": "1000",
}

PROBABILITY_TOLERANCE = 1e-4
"""Two results of the same text agree when their labels do and their top probabilities within this."""

FAULTS = ("kill_redis", "kill_redis", "stop_redis", "kill_worker", "kill_starting_worker",
          "term_worker", "kill_api", "kill_starting_api")
"""Redis killed under `always` only (drawn twice as often as another fault): under `everysec` Redis answers writes
it has not yet written while a background fsync runs, and a kill then loses them (docs/operations.md, "What can be
lost"; the likely cause of the one job a CI run of the checker lost)."""

REPLICATED_FAULTS = ("kill_primary", "kill_primary", "stop_primary", "stop_primary", "kill_worker",
                     "kill_starting_worker", "term_worker", "kill_api", "kill_starting_api")
"""With replication: the primary's faults instead of the lone Redis's, each drawn twice as often as another."""

RESYNC_SECONDS = 30
"""How long the primary's faults wait for the replica to be in sync first: two nodes tolerate one loss at a time
(a primary killed while its only replica is still resyncing may lose what only it held)."""

WORDS = ("the queue keeps every job it accepts whatever crashes and whenever a worker dies mid batch "
         "redis restarts from its append only file and the api answers again quickly").split()


@dataclass
class History:
    """What the clients saw: every accepted job's texts, and every answer's status."""

    accepted: dict[str, list[str]] = field(default_factory=dict)
    accepted_at: dict[str, float] = field(default_factory=dict)  # unix time of each 202
    answers: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Checker:
    """One run: the stack, the clients, the fault schedule, the verdict."""

    def __init__(self, root: Path, model: Path, seed: int, log=print, replicated: bool = False):
        self.root, self.seed, self.log = root, seed, log
        self.rng = random.Random(seed)
        self.runs = root / "runs"
        self.runs.mkdir(parents=True, exist_ok=True)
        self.replicated = replicated
        self.kinds = REPLICATED_FAULTS if replicated else FAULTS
        if replicated:
            self.stack: Stack = ReplicatedStack(root, model, **CHECKER_ENV, INFERQ_TEST_RUN_LOG=str(self.runs))
        else:
            self.stack = Stack(root, model, appendfsync="always", **CHECKER_ENV, INFERQ_TEST_RUN_LOG=str(self.runs))
        self.api_bind = f"127.0.0.1:{free_port()}"
        self.api_url = f"http://{self.api_bind}"
        self.history = History()
        self.faults: Counter = Counter()
        self.timeline: list[tuple[float, float, str]] = []  # each fault's start and end (unix time) and kind
        self._stop = threading.Event()

    # --- the stack, restarted as a supervisor would ---

    def start(self) -> None:
        self.stack.start_redis()
        self.stack.start_workers(list(WORKERS))
        self._start_api(wait=True)

    def _start_api(self, wait: bool = False) -> None:
        log = self.stack.log("api")
        process = processes.spawn(processes.api_command(self.api_bind), self.stack.service_env(), log)
        self.stack.apis = [process]
        if wait:
            processes.wait_until(lambda: processes.http_ok(self.api_url + "/healthz"), 30, "API", process, log)

    def _spawn_worker(self, name: str) -> None:
        try:
            self.stack.client.zrem(WORKERS_KEY, f"{name}@{HOST}")
        except redis.RedisError:
            pass  # Redis away (a failover): the worker's heartbeat registers it again anyway
        self.stack.workers[name] = processes.spawn(processes.worker_command(name), self.stack.worker_env[name],
                                                   self.stack.log(name))

    def _kill(self, process, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        process.wait()

    # --- the faults ---

    def kill_redis(self) -> None:
        self.stack.redis.kill()
        time.sleep(self.rng.uniform(0, 1))
        self.stack.start_redis()

    def stop_redis(self) -> None:
        pid = self.stack.redis.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(self.rng.uniform(0.5, 3.0))
        finally:
            os.kill(pid, signal.SIGCONT)

    def kill_primary(self) -> None:
        group = self.stack.group  # type: ignore[attr-defined]
        try:
            group.wait_replicated(RESYNC_SECONDS)
        except Exception:
            return  # no replica in sync: no fault this time
        primary = group.current_primary()
        primary.kill()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if group.master_address()[1] != primary.port:
                    break
            except Exception:
                pass
            time.sleep(0.05)
        time.sleep(self.rng.uniform(0, 1))
        group.restart_as_replica(primary)

    def stop_primary(self) -> None:
        group = self.stack.group  # type: ignore[attr-defined]
        try:
            group.wait_replicated(RESYNC_SECONDS)
        except Exception:
            return
        pid = group.current_primary().pid
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(self.rng.uniform(0.5, 3.0))
        finally:
            os.kill(pid, signal.SIGCONT)

    def kill_worker(self) -> None:
        name = self.rng.choice(WORKERS)
        self._kill(self.stack.workers[name])
        time.sleep(self.rng.uniform(0, 0.5))
        self._spawn_worker(name)

    def kill_starting_worker(self) -> None:
        """A worker killed again while it starts (before its model is loaded, or just after)."""
        name = self.rng.choice(WORKERS)
        self._kill(self.stack.workers[name])
        self._spawn_worker(name)
        time.sleep(self.rng.uniform(0.1, 2.5))
        self._kill(self.stack.workers[name])
        self._spawn_worker(name)

    def term_worker(self) -> None:
        name = self.rng.choice(WORKERS)
        process = self.stack.workers[name]
        try:
            os.kill(process.pid, signal.SIGTERM)  # the worker gives back its job and leaves
            process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except Exception:
            self._kill(process)
        self._spawn_worker(name)

    def kill_api(self) -> None:
        self._kill(self.stack.apis[0])
        time.sleep(self.rng.uniform(0, 0.5))
        self._start_api()

    def kill_starting_api(self) -> None:
        self._kill(self.stack.apis[0])
        self._start_api()
        time.sleep(self.rng.uniform(0.05, 1.0))
        self._kill(self.stack.apis[0])
        self._start_api()

    # --- the clients ---

    def _client(self, number: int) -> None:
        rng = random.Random(f"{self.seed}-client-{number}")
        sent = 0
        with requests.Session() as session:
            while not self._stop.is_set():
                sent += 1
                n = 1 if rng.random() < 0.8 else rng.randint(2, 8)
                texts = [f"{number}.{sent}.{i} " + " ".join(rng.choices(WORDS, k=rng.randint(3, 12)))
                         for i in range(n)]
                body = {"text": texts[0]} if n == 1 else {"texts": texts}
                try:
                    response = session.post(self.api_url + "/jobs", json=body, timeout=10)
                    status = response.status_code
                except requests.RequestException:
                    status = 0  # no answer: not accepted
                with self.history.lock:
                    self.history.answers[status] += 1
                    if status == 202:
                        job_id = response.json()["job_id"]
                        self.history.accepted[job_id], self.history.accepted_at[job_id] = texts, time.time()
                if status != 202:
                    time.sleep(0.05)  # a service is away: do not spin

    # --- the run ---

    def run(self, faults: int | None = None, seconds: float | None = None) -> dict:
        """Inject faults (a number, or for a time), then check every accepted job; return the figures."""
        clients = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)]
        for thread in clients:
            thread.start()
        started = time.monotonic()
        while (faults is not None and sum(self.faults.values()) < faults) or \
                (seconds is not None and time.monotonic() - started < seconds):
            time.sleep(self.rng.uniform(0.2, 1.2))
            fault = self.rng.choice(self.kinds)
            began = time.time()
            getattr(self, fault)()
            self.faults[fault] += 1
            self.timeline.append((began, time.time(), fault))
        time.sleep(1)
        self._stop.set()
        for thread in clients:
            thread.join()
        return self.verdict(time.monotonic() - started)

    def _everything_back(self) -> None:
        if self.replicated:
            group = self.stack.group  # type: ignore[attr-defined]
            for node in group.nodes:
                if node.process.poll() is not None:
                    group.restart_as_replica(node)
            self.stack.settled()  # type: ignore[attr-defined]
        elif self.stack.redis.process.poll() is not None:
            self.stack.start_redis()
        for name, process in self.stack.workers.items():
            if process.poll() is not None:
                self._spawn_worker(name)
        if self.stack.apis[0].poll() is not None:
            self._start_api()

    def verdict(self, seconds: float) -> dict:
        """Wait for every accepted job's final state; compare with the expected results and the run logs."""
        self._everything_back()
        accepted = dict(self.history.accepted)
        states = self.stack.wait_done(list(accepted), timeout=300)
        lost = sorted(j for j, s in states.items() if s != "SUCCESS")
        expected = self._expected(accepted)
        runs = self._runs()
        wrong = set()
        for job_id, texts in accepted.items():
            meta = self.stack.meta(job_id) if job_id not in lost else None
            if meta is not None and not _agree(_summary(meta["result"]["results"]), [expected[t] for t in texts]):
                wrong.add(job_id)
            stored = runs.get(job_id, [])
            if any(not _agree(a, b) for a, b in pairwise(stored)):
                wrong.add(job_id)
        figures = {"seed": self.seed, "faults": sum(self.faults.values()), "accepted": len(accepted),
                   "lost": len(lost), "wrong": len(wrong),
                   "ran_twice": sum(len(r) > 1 for j, r in runs.items() if j in accepted),
                   "seconds": round(seconds, 1), "refused_or_unanswered": sum(
                       n for status, n in self.history.answers.items() if status != 202),
                   "faults_by_kind": ",".join(f"{k}:{v}" for k, v in sorted(self.faults.items()))}
        if lost or wrong:
            self.log(f"lost: {lost[:20]}\nwrong: {sorted(wrong)[:20]}\nlogs: {self.root}")
            for job_id in lost[:5]:
                self.log(self.explain(job_id))
        return figures

    def explain(self, job_id: str) -> str:
        """What is known of a lost job: where it lies in Redis, the faults around its 202, and every log line that
        names it (CI keeps only the test's output, not the logs)."""
        accepted_at = self.history.accepted_at.get(job_id, 0.0)
        around = [f"  {began - accepted_at:+.3f}s..{ended - accepted_at:+.3f}s {kind}"
                  for began, ended, kind in self.timeline if began - 10 <= accepted_at <= ended + 10]
        lanes = list(contract.lane_queues(self.stack.env.get("INFERQ_QUEUE", "inferq")).values())
        lines = [f"job {job_id}: accepted at {accepted_at:.3f}; in Redis: "
                 f"{holders.whereabouts(self.stack.client, job_id, lanes)}",
                 "faults within 10 s of its 202 (relative to it):", *around]
        lines += holders.lines_naming(sorted(self.root.rglob("*.log")), job_id, 20, self.root)
        return "\n".join(lines)

    def _expected(self, accepted: dict[str, list[str]]) -> dict[str, tuple[str, float]]:
        """Each text's label and top probability, from the same model and path, one text at a time."""
        from inferq.model.inference import classify
        from inferq.model.loader import load
        from inferq.settings import ModelSource, current

        loaded = load(self.stack.env["INFERQ_MODEL"], current(ModelSource).cache, CHECKER_ENV["INFERQ_PRECISION"])
        texts = sorted({t for ts in accepted.values() for t in ts})
        out = {}
        for i in range(0, len(texts), 64):
            chunk = texts[i:i + 64]
            for text, result in zip(chunk, classify(loaded, chunk)):
                out[text] = (result["label"], max(result["probabilities"].values()))
        return out

    def _runs(self) -> dict[str, list[list[tuple[str, float]]]]:
        """Every run of every job, from the workers' run logs: per text, (label, top probability)."""
        runs: dict[str, list] = {}
        for path in self.runs.glob("runs-*.log"):
            for line in path.read_text().splitlines():
                job_id, _, summary = line.partition(" ")
                if ":" not in summary:
                    runs.setdefault(job_id, []).append(summary)  # a failure or a cancellation
                    continue
                parts = [p.rsplit(":", 1) for p in summary.split(",")]
                runs.setdefault(job_id, []).append([(label, float(p)) for label, p in parts])
        return runs

    def stop(self) -> None:
        for process in self.stack.apis:
            if process.poll() is None:
                processes.stop(process, timeout=10)
        self.stack.stop()


def _summary(results: list[dict]) -> list[tuple[str, float]]:
    return [(r["label"], max(r["probabilities"].values())) for r in results]


def _agree(a, b) -> bool:
    """Two results of the same texts agree: the same labels, probabilities within the tolerance."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return len(a) == len(b) and all(la == lb and abs(pa - pb) <= PROBABILITY_TOLERANCE
                                    for (la, pa), (lb, pb) in zip(a, b))


def main(argv: list[str] | None = None) -> int:
    """The soak: the checker for MINUTES with a new seed; prints the figures line, fails on a loss."""
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.checker", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--seed", type=int, default=None, help="default: a new one, printed")
    parser.add_argument("--replicated", action="store_true", help="a primary, a replica and three Sentinels")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:1/0")  # never a shared Redis
    from inferq.model.builder import build
    from tests.figures import record

    model = build("tiny", Path(__file__).resolve().parents[2] / ".cache" / "models" / "offline-tiny")
    root = Path(tempfile.mkdtemp(prefix="inferq-soak-"))
    print(f"soak: seed={seed} for {args.minutes} min on {socket.gethostname()}, logs in {root}", flush=True)
    checker = Checker(root, model, seed, replicated=args.replicated)
    try:
        checker.start()
        figures = checker.run(seconds=60 * args.minutes)
    finally:
        checker.stop()
    record("crash checker" + (", replicated" if args.replicated else ""), **figures)
    return 1 if figures["lost"] or figures["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
