"""Load generators: HTTP clients that submit jobs to inferq and fetch each result with the long-poll."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from inferq.stack.stats import percentile

WAIT_SECONDS = 30
"""Long-poll length per GET: far longer than any job here takes."""


@dataclass
class Sample:
    """One job as a client saw it."""

    submitted: float
    done: float
    inference_ms: float
    worker: str

    @property
    def latency_ms(self) -> float:
        return (self.done - self.submitted) * 1000


@dataclass
class Run:
    """The samples of one load pattern, and the wall time it took."""

    label: str
    samples: list[Sample] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0

    @property
    def tps(self) -> float:
        return len(self.samples) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in ms (q in 1..99)."""
        return percentile([s.latency_ms for s in self.samples], q)


def one_job(session: requests.Session, base: str, text: str | list[str]) -> Sample:
    """Submit one text (or a bulk job of texts) and wait for its result: POST /jobs?wait, as a waiting client does
    (one round trip when the job is done within the wait), then long-polls if it is not."""
    submitted = time.time()
    body = {"texts": text} if isinstance(text, list) else {"text": text}
    response = session.post(f"{base}/jobs", params={"wait": WAIT_SECONDS}, json=body, timeout=WAIT_SECONDS + 30)
    response.raise_for_status()
    job = response.json()
    job_id = job["job_id"]
    while job["status"] not in ("succeeded", "failed"):
        job = session.get(f"{base}/jobs/{job_id}", params={"wait": WAIT_SECONDS}, timeout=WAIT_SECONDS + 30).json()
    done = time.time()
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} failed: {job.get('error')}")
    return Sample(submitted, done, job["timings"]["inference_ms"], job["worker"]["hostname"])


def record_job(run: Run, lock: threading.Lock, session: requests.Session, base: str, text: str,
               progress: Callable[[int], None]) -> None:
    """Run one job and add its sample to run (or count it as an error), under lock."""
    try:
        sample = one_job(session, base, text)
    except Exception:
        with lock:
            run.errors += 1
        return
    with lock:
        run.samples.append(sample)
    progress(1)


def closed_loop(base: str, texts: list[str], clients: int, jobs: int, label: str,
                progress: Callable[[int], None] = lambda n: None, stop: threading.Event | None = None) -> Run:
    """`clients` threads, each submitting its next job as soon as the last is done, until `jobs` are done
    (or until `stop` is set)."""
    run, lock = Run(label), threading.Lock()
    counter = iter(range(jobs))

    def client():
        with requests.Session() as session:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None or (stop is not None and stop.is_set()):
                    return
                record_job(run, lock, session, base, texts[i % len(texts)], progress)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.seconds = time.perf_counter() - start
    return run


def open_loop(base: str, texts: list[str], rate: float, seconds: float, label: str,
              progress: Callable[[int], None] = lambda n: None) -> Run:
    """Jobs arriving at a fixed rate (per second) for `seconds`, whatever the answers' speed."""
    run, lock = Run(label), threading.Lock()
    local = threading.local()
    n = max(1, int(rate * seconds))

    def job(i):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        record_job(run, lock, local.session, base, texts[i % len(texts)], progress)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=64) as pool:
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(job, i)
    run.seconds = time.perf_counter() - start
    return run


def idle_jobs(base: str, texts: list[str], jobs: int, pause: float = 0.05) -> list[Sample]:
    """Jobs one at a time on an otherwise idle system, with a pause between them."""
    samples = []
    with requests.Session() as session:
        for i in range(jobs):
            samples.append(one_job(session, base, texts[i % len(texts)]))
            time.sleep(pause)
    return samples
