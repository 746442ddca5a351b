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
    .venv/bin/python -m bench.eta_replay --floor /tmp/eta.csv           # and what no estimate could beat

What it leaves out: a running job's end is estimated from history, not from
its own step rate (the CSV has only its last step); one worker.

--floor adds what is left when only the future arrivals are unknown. Each
measured job's start is played from its submit by the fair policy (one
worker, the run's own gap between a job's end and the next claim; jobs
started by then keep their recorded times, so the running job's end is
known exactly):

- foreseen: once, with the run's actual later submits and run times: it
  checks the play against what the run did (expect about 0%);
- law, mean / law, best: PLAYS times, each user's later jobs arriving at
  random at the rate bench/fairness.py paced them at (a third of 80% load at
  its warm-up's median run), waiting and new jobs' run times drawn from the
  run's own; the plays' mean start, and the start within 25% of the most
  plays. What an estimate at the submit could answer if it knew the true
  rates and the running job's end: the floor under the service's.
"""

import argparse
import csv
import random
import statistics
from datetime import datetime

from bench.common import setup_django

setup_django(data_dir=None, quiet=True)

from django.conf import settings

from bench.eta_model import best_window
from jobs.models import Priority
from jobs.scheduling import estimates

USERS = ("u1", "u2", "u3")  # bench/fairness.py's; its warm-up jobs are history
PLAYS = 150


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


def play(jobs: list[dict], job: dict, later: list[tuple[float, str, float]], gap: float,
         seconds: dict[int, float]) -> float:
    """
    When `job` starts (seconds since the epoch), played by the fair policy on
    one worker from its submit: the jobs that waited then run for
    `seconds`[id]; `later` (submitted, user, seconds), in submission order,
    join as they come. bench/fairness.py's runs are shorter than the fair
    window, so each user's worker time is all they ran.
    """
    now = job["submitted"].timestamp()
    used: dict[str, float] = {}
    free = now
    queues: dict[str, list[tuple[float, int | None, float]]] = {}
    for other in jobs:
        if other["submitted"].timestamp() > now:
            continue
        if other["started"].timestamp() <= now:
            end = other["completed"].timestamp()
            used[other["user"]] = used.get(other["user"], 0.0) + end - other["started"].timestamp()
            if end > now:
                free = end + gap
        else:
            entry = (other["submitted"].timestamp(), other["id"], seconds[other["id"]])
            queues.setdefault(other["user"], []).append(entry)
    arriving = iter(later)
    coming = next(arriving, None)
    while True:
        while coming is not None and coming[0] <= free:
            queues.setdefault(coming[1], []).append((coming[0], None, coming[2]))
            coming = next(arriving, None)
        waiting = [user for user, queue in queues.items() if queue]
        if not waiting:
            free = coming[0]
            continue
        user = min(waiting, key=lambda name: (used.get(name, 0.0), queues[name][0][0]))
        _, job_id, duration = queues[user].pop(0)
        if job_id == job["id"]:
            return free
        used[user] = used.get(user, 0.0) + duration
        free += duration + gap


def floor(jobs: list[dict], rng: random.Random) -> dict[str, list[float]]:
    """Signed errors of the foreseen start and of the law's mean and best, for the jobs replay() measures."""
    ordered = sorted(jobs, key=lambda job: job["started"])
    gap = statistics.median((after["started"] - before["completed"]).total_seconds()
                            for before, after in zip(ordered, ordered[1:]) if after["submitted"] < before["completed"])
    warm = sorted((job for job in jobs if job["user"] == "warm-up"), key=lambda job: job["completed"])[1:]
    rate = 0.8 / (3 * statistics.median((job["completed"] - job["started"]).total_seconds() for job in warm))
    actual = {job["id"]: (job["completed"] - job["started"]).total_seconds() for job in jobs}
    runs = [actual[job["id"]] for job in jobs if job["user"] in USERS]
    errors = {"foreseen": [], "law, mean": [], "law, best": []}
    for job in jobs:
        now = job["submitted"].timestamp()
        wait = job["started"].timestamp() - now
        measured = job["estimated_start"] is not None and wait >= 1 and duration_model(jobs, job["submitted"])
        if job["user"] not in USERS or not measured:
            continue
        later = [(other["submitted"].timestamp(), other["user"], actual[other["id"]]) for other in jobs
                 if other["submitted"].timestamp() > now]
        errors["foreseen"].append((play(jobs, job, later, gap, actual) - job["started"].timestamp()) / wait)
        waits = []
        for _ in range(PLAYS):
            drawn = {other["id"]: rng.choice(runs) for other in jobs}
            horizon = now + 10 * wait + 60
            later = []
            for user in USERS:
                at = now + rng.expovariate(rate)
                while at < horizon:
                    later.append((at, user, rng.choice(runs)))
                    at += rng.expovariate(rate)
            waits.append(play(jobs, job, sorted(later), gap, drawn) - now)
        for name, estimate in (("law, mean", statistics.fmean(waits)), ("law, best", best_window(sorted(waits)))):
            errors[name].append((estimate - wait) / wait)
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
    parser.add_argument("--floor", action="store_true", help="add the foreseen start and the law's (see above)")
    args = parser.parse_args()
    paths = args.csv
    pooled: dict[str, list[float]] = {}
    rng = random.Random(1)
    for path in paths:
        jobs = read(path)
        errors = replay(jobs)
        if args.floor:
            errors.update(floor(jobs, rng))
        show(path, errors)
        for name, signed in errors.items():
            pooled.setdefault(name, []).extend(signed)
    if len(paths) > 1:
        show("all runs", pooled)


if __name__ == "__main__":
    main()
