"""
Replays a bench/fairness.py --parts eta run from its --eta-csv: at each
submit, the queue as the service saw it (the waiting jobs, the running one,
each user's worker time, their rates of new work, the history of durations)
is rebuilt from the recorded times and each job's start estimated again
with jobs.scheduling.estimates.play_forward, both as the expected start (the catch-up)
and as the likeliest one. The same arrivals and real run times for both, so
two estimators can be compared on one real run without a second run's noise
(a shared box moves a run by tens of percent). "recorded" is what the run's
GET /job answered, to check the replay against.

    .venv/bin/python -m bench.eta_replay /tmp/eta.csv [more.csv ...]

What it leaves out: a running job's end is estimated from history, not from
its own step rate (the CSV has only its last step); one worker.
"""

import argparse
import csv
import statistics
from datetime import datetime

from bench.common import setup_django

setup_django(data_dir=None, quiet=True)

from django.conf import settings

from jobs.scheduling import estimates
from jobs.models import Priority


def moment(value: str) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def read(path: str) -> list[dict]:
    jobs = []
    for number, row in enumerate(csv.DictReader(open(path))):
        job = {"id": number, "user": row["user"], "steps": int(row["steps"]), "done_steps": int(row["current_step"])}
        for name in ("submitted", "estimated_start", "started", "first_step", "stepped", "completed"):
            job[name] = moment(row[name])
        jobs.append(job)
    return jobs


def duration_model(jobs: list[dict], now: datetime):
    """As estimates.model_history: trimmed means of the last HISTORY_JOBS completed by `now` (one size here)."""
    done = sorted((job for job in jobs if job["completed"] and job["completed"] <= now and job["first_step"]),
                  key=lambda job: job["completed"])[-estimates.HISTORY_JOBS:]
    if not done:
        return None
    head = estimates.trimmed_mean([(job["first_step"] - job["started"]).total_seconds() for job in done])
    tail = estimates.trimmed_mean([(job["completed"] - job["stepped"]).total_seconds() for job in done])
    step = estimates.trimmed_mean([(job["stepped"] - job["first_step"]).total_seconds() / (job["done_steps"] - 1)
                                   for job in done if job["done_steps"] >= 2]) or 0.0
    return lambda steps: head + step * (steps - 1) + tail


def replay(jobs: list[dict]) -> dict[str, list[float]]:
    """Signed (estimate - actual) / actual wait per estimator, for the jobs that waited >= 1 s and had an estimate."""
    errors = {"recorded": [], "catch-up": [], "likeliest": []}
    for job in jobs:
        now = job["submitted"]
        wait = (job["started"] - now).total_seconds()
        if job["estimated_start"] is None or wait < 1:
            continue
        duration = duration_model(jobs, now)
        if duration is None:
            continue
        waiting = [(other["id"], other["user"], duration(other["steps"]), Priority.NORMAL) for other in jobs
                   if other["submitted"] <= now and (other["started"] is None or other["started"] > now)]
        used, remaining = {}, []
        since = now.timestamp() - settings.VIDEOGEN_FAIR_WINDOW
        for other in jobs:
            if other["started"] and other["started"] <= now:
                end = min(other["completed"], now) if other["completed"] else now
                used[other["user"]] = used.get(other["user"], 0.0) + max(
                    end.timestamp() - max(other["started"].timestamp(), since), 0.0)
                if other["completed"] is None or other["completed"] > now:
                    remaining.append(max(duration(other["steps"]) - (now - other["started"]).total_seconds(), 0.0))
                    used[other["user"]] += remaining[-1]
        window = now.timestamp() - estimates.ARRIVAL_WINDOW
        recent = [other for other in jobs if window <= other["submitted"].timestamp() and other["submitted"] <= now]
        span = max(min(estimates.ARRIVAL_WINDOW, (now - min(other["submitted"] for other in recent)).total_seconds()),
                   estimates.ARRIVAL_MIN_SPAN)
        rates: dict[str, float] = {}
        for other in recent:
            rates[other["user"]] = rates.get(other["user"], 0.0) + duration(other["steps"]) / span
        new_job = sum(duration(other["steps"]) for other in recent) / len(recent)
        for name, size in (("catch-up", None), ("likeliest", new_job)):
            start = estimates.play_forward(now, waiting, used, {}, remaining, 1, rates, size)[job["id"]][1]
            errors[name].append((start - job["started"]).total_seconds() / wait)
        errors["recorded"].append((job["estimated_start"] - job["started"]).total_seconds() / wait)
    return errors


def show(label: str, errors: dict[str, list[float]]) -> None:
    print(f"{label}: {len(errors['recorded'])} jobs waited >= 1 s")
    for name, signed in errors.items():
        size = sorted(abs(error) for error in signed)
        if size:
            print(f"  {name:10} median {statistics.median(size):6.1%}   p75 {size[int(len(size) * 0.75)]:6.1%}   "
                  f"early {sum(error < 0 for error in signed) / len(signed):4.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="+", help="bench/fairness.py --eta-csv files")
    paths = parser.parse_args().csv
    pooled: dict[str, list[float]] = {}
    for path in paths:
        errors = replay(read(path))
        show(path, errors)
        for name, signed in errors.items():
            pooled.setdefault(name, []).extend(signed)
    if len(paths) > 1:
        show("all runs", pooled)


if __name__ == "__main__":
    main()
