"""The background worker: polls for jobs and retries flaky ones; run it with `python3 -m app.worker`."""

from __future__ import annotations

import logging
import os
import random
import time

import humanize
from tenacity import retry, stop_after_attempt, wait_exponential

log = logging.getLogger("app.worker")


class TransientJobError(Exception):
    """A job failed in a way that a retry may cure."""


@retry(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.1, max=2), reraise=True)
def process(job_id: int) -> int:
    """Process one job; fails now and then to show the retries."""
    if random.random() < 0.2:  # a simulated failure
        raise TransientJobError(f"job {job_id} hit a transient failure")
    return job_id * 2


def run(*, interval: float, jobs: int | None = None) -> None:
    """Process jobs every `interval` seconds; stop after `jobs` of them when given."""
    started = time.monotonic()
    job_id = 0
    while jobs is None or job_id < jobs:
        job_id += 1
        try:
            result = process(job_id)
        except TransientJobError:
            log.exception("job %d failed after retries", job_id)
        else:
            uptime = humanize.naturaldelta(time.monotonic() - started)
            log.info("job %d -> %d (up %s)", job_id, result, uptime)
        time.sleep(interval)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run(interval=float(os.environ.get("WORKER_INTERVAL_SECONDS", "5")))
