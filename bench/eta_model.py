"""
The estimated start's error, from a model of bench/fairness.py's eta
scenario: users submit at random (Poisson) to workers that claim by the
fair policy, simulated in this process; at each submit the job's start is
estimated by the service's own code (jobs.scheduling.estimates.play_forward) from
what the service would know then. Thousands of jobs in seconds and the
same jobs for every estimator, so estimators can be compared without a
real run's noise (bench/fairness.py --parts eta measures the service).

    .venv/bin/python -m bench.eta_model                     # 30 runs of 150 s, 3 users, one worker, 80% load
    .venv/bin/python -m bench.eta_model --runs 10 --users 10 --workers 2 --load 0.9
    .venv/bin/python -m bench.eta_model --bench-arrivals      # bench/fairness.py's own submits, run times at random

Estimators, each on the same simulated runs:

- waiting only: the jobs already waiting, played forward (no new work);
- stretched: the estimate before the catch-up (9f3a5fc): each wait
  divided by 1 - the share of the workers that users who have used less
  than the job's user submit new work at;
- catch-up: the expected start (estimates.Arrivals, the service's before
  likeliest_waits): another user's new work goes first only until their worker
  time reaches this job's user's;
- likeliest: the service's (estimates.likeliest_waits): the catch-up's
  expected start unless another is likelier to be within 25% of the actual
  one, with a Poisson number of new jobs of the mean size going first;
- simulated (with --simulations N): no formula, the policy itself played N
  times from what is known at the submit, each user's new work arriving at
  random at their rate (jobs of the mean size); the mean start. What an
  estimate from these rates could do at best, to compare with;
- simulated median, rel., window: the same plays' median start; their
  median weighted by 1 / wait (the start that minimises the mean relative
  error, not its median); the start within 25% of the most plays.

What the model leaves out: the time between a job's end and the next
claim (a median 16 ms measured), cold starts, and history that moves
during a run (each job is estimated from the mean run of its size).
Durations are tiny-random's on an idle box: 0.40 s + 0.01 s per step,
each run within +-7% of that.
"""

import argparse
import heapq
import random
import statistics
from datetime import datetime, timedelta, timezone

from bench.common import setup_django

setup_django(data_dir=None, quiet=True)

from jobs.scheduling import estimates
from jobs.models import Priority
from jobs.scheduling.queue import fair_key

STEPS = (4, 8, 12)
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
ESTIMATORS = ("waiting only", "stretched", "catch-up", "likeliest", "simulated", "simulated median",
              "simulated rel.", "simulated window")


def mean_duration(steps: int) -> float:
    return 0.40 + 0.01 * steps


def fair_choice(users: list[str], used: dict[str, float]) -> int:
    """
    Which waiting job the fair policy runs next (jobs.scheduling.queue, weights all 1),
    given each job's user in submission order: the oldest job of the user
    who used least, ties to the oldest.
    """
    oldest: dict[str, int] = {}
    for rank, user in enumerate(users):
        oldest.setdefault(user, rank)
    return oldest[min(oldest, key=lambda user: fair_key(used.get(user, 0.0), 1.0, oldest[user]))]


def simulated_starts(rng: random.Random, queue: list, used: dict[str, float], remaining: list[float],
                     rates: dict[str, float], job_id: int, workers: int, simulations: int) -> list[float]:
    """
    The starts, in seconds from now, of job_id in `simulations` plays
    of the fair policy from this state (`queue`: id, user, estimated seconds,
    in submission order), new work arriving at random at each user's rate.
    """
    mean_job = statistics.mean(map(mean_duration, STEPS))
    starts = []
    for _ in range(simulations):
        spent, waiting, new = dict(used), list(queue), 0
        free = remaining + [0.0] * (workers - len(remaining))
        heapq.heapify(free)
        next_at = {user: rng.expovariate(rate / mean_job) for user, rate in rates.items() if rate > 0}
        while True:
            at = heapq.heappop(free)
            for user in next_at:
                while next_at[user] <= at:
                    new += 1
                    waiting.append((("new", new), user, mean_job))
                    next_at[user] += rng.expovariate(rates[user] / mean_job)
            chosen, user, duration = waiting.pop(fair_choice([job[1] for job in waiting], spent))
            if chosen == job_id:
                starts.append(at)
                break
            spent[user] = spent.get(user, 0.0) + duration
            heapq.heappush(free, at + duration)
    return starts


def best_window(waits: list[float], within: float = 0.25) -> float:
    """The estimate within `within` x the wait of the most of these equally likely waits."""
    best, covered = waits[0], -1
    for low in waits:
        # e is within `within` of W when W (1 - within) <= e <= W (1 + within); the best e is one of these bounds.
        e = low * (1 + within)
        count = sum(1 for wait in waits if wait * (1 - within) <= e <= wait * (1 + within))
        if count > covered:
            best, covered = e, count
    return best


def relative_median(waits: list[float]) -> float:
    """
    The wait that minimises the expected |estimate - wait| / wait over these
    equally likely waits: their median weighted by 1 / wait.
    """
    waits = sorted(max(wait, 1e-3) for wait in waits)
    half, total = sum(1 / wait for wait in waits) / 2, 0.0
    for wait in waits:
        total += 1 / wait
        if total >= half:
            return wait
    return waits[-1]


def estimators_of(args) -> list[str]:
    return [name for name in ESTIMATORS if not name.startswith("simulated") or args.simulations]


def simulate(seed: int, args) -> dict[str, list[float]]:
    """One run: each estimator's |estimated - actual start| / actual wait for the jobs that waited >= 1 s."""
    rng = random.Random(seed)
    plays = random.Random(f"plays {seed}")  # the simulated estimator's own: the runs stay the same with or without it
    users = [f"u{n}" for n in range(1, args.users + 1)]
    # Each user submits a 1/users share of the load.
    gap = args.users * statistics.mean(map(mean_duration, STEPS)) / (args.load * args.workers)
    arrivals = []
    if args.bench_arrivals:
        # bench/fairness.py's own draws (its seed 9, 3 users): the same submits in every run, only run times vary.
        bench = random.Random(9)
        next_at = {user: bench.expovariate(1 / gap) for user in users}
        while True:
            user = min(next_at, key=next_at.get)
            if next_at[user] >= args.seconds:
                break
            steps = bench.choice(STEPS)
            arrivals.append((next_at[user], user, mean_duration(steps), mean_duration(steps) * rng.uniform(0.93, 1.07)))
            next_at[user] += bench.expovariate(1 / gap)
    else:
        for user in users:
            at = rng.expovariate(1 / gap)
            while at < args.seconds:
                steps = rng.choice(STEPS)
                arrivals.append((at, user, mean_duration(steps), mean_duration(steps) * rng.uniform(0.93, 1.07)))
                at += rng.expovariate(1 / gap)
    arrivals.sort()

    waiting: list[tuple[float, int, str, float, float]] = []  # (submitted, id, user, estimated, actual)
    running: dict[int, tuple[float, float, str, float]] = {}  # id -> (started, ends, user, estimated)
    ran: list[tuple[float, float, str]] = []  # (started, ended, user)
    submitted_work: list[tuple[float, str, float]] = []  # (at, user, estimated seconds)
    submitted_at, started_at, estimated = {}, {}, {name: {} for name in ESTIMATORS}

    def used_at(now: float) -> dict[str, float]:
        # worker_time_used: started to ended (to now while running), clipped to the window.
        used: dict[str, float] = {}
        since = now - args.window
        for started, ended, user in [*ran, *((s, now, u) for s, _, u, _ in running.values())]:
            inside = min(ended, now) - max(started, since)
            if inside > 0:
                used[user] = used.get(user, 0.0) + inside
        return used

    def claim(now: float) -> None:
        while waiting and len(running) < args.workers:
            used = used_at(now)
            job = waiting.pop(fair_choice([job[2] for job in waiting], used))
            user = job[2]
            running[job[1]] = (now, now + job[4], user, job[3])
            started_at[job[1]] = now

    def estimate(now: float, job_id: int) -> None:
        used = used_at(now)
        remaining = []
        for started, _, user, guess in running.values():
            remaining.append(max(guess - (now - started), 0.0))
            used[user] = used.get(user, 0.0) + remaining[-1]
        since = now - estimates.ARRIVAL_WINDOW
        recent = [(at, user, work) for at, user, work in submitted_work if at >= since]
        span = max(min(estimates.ARRIVAL_WINDOW, now - min(at for at, _, _ in recent)), estimates.ARRIVAL_MIN_SPAN)
        rates: dict[str, float] = {}
        for _, user, work in recent:
            rates[user] = rates.get(user, 0.0) + work / span
        now_at = EPOCH + timedelta(seconds=now)
        queue = [(job[1], job[2], job[3]) for job in waiting]
        # As play_forward takes them: every job of normal priority.
        prioritised = [(*job, Priority.NORMAL) for job in queue]

        def seconds(standing) -> float:
            return (standing[job_id][1] - EPOCH).total_seconds()

        alone = seconds(estimates.play_forward(now_at, prioritised, used, {}, remaining, args.workers, {}))
        user = submitted_by[job_id]
        faster = sum(rate for other, rate in rates.items() if other != user and used.get(other, 0.0) < used.get(user, 0.0))
        share = min(faster / args.workers, estimates.MAX_ARRIVING_SHARE)
        estimated["waiting only"][job_id] = alone
        estimated["stretched"][job_id] = now + (alone - now) / (1 - share)
        estimated["catch-up"][job_id] = seconds(estimates.play_forward(now_at, prioritised, used, {}, remaining,
                                                                       args.workers, rates))
        new_job = sum(work for _, _, work in recent) / len(recent)
        estimated["likeliest"][job_id] = seconds(estimates.play_forward(now_at, prioritised, used, {}, remaining,
                                                                        args.workers, rates, new_job))
        if args.simulations:
            starts = simulated_starts(plays, queue, used, remaining, rates, job_id, args.workers, args.simulations)
            estimated["simulated"][job_id] = now + statistics.mean(starts)
            estimated["simulated rel."][job_id] = now + relative_median(starts)
            estimated["simulated window"][job_id] = now + best_window(starts)
            estimated["simulated median"][job_id] = now + statistics.median(starts)

    estimators = estimators_of(args)
    submitted_by = {}
    for job_id, (at, user, guess, actual) in enumerate(arrivals):
        # Jobs that end before this submit, in order, each followed by its worker's next claim.
        while running and min(ends for _, ends, _, _ in running.values()) <= at:
            done = min(running, key=lambda key: running[key][1])
            started, ends, who, _ = running.pop(done)
            ran.append((started, ends, who))
            claim(ends)
        waiting.append((at, job_id, user, guess, actual))
        submitted_at[job_id], submitted_by[job_id] = at, user
        submitted_work.append((at, user, guess))
        claim(at)
        if job_id not in started_at:
            estimate(at, job_id)
    while running:
        done = min(running, key=lambda key: running[key][1])
        started, ends, who, _ = running.pop(done)
        ran.append((started, ends, who))
        claim(ends)

    errors = {name: [] for name in estimators}
    for job_id in estimated["catch-up"]:
        wait = started_at[job_id] - submitted_at[job_id]
        if wait >= 1.0:  # as bench/fairness.py counts
            for name in estimators:
                errors[name].append((estimated[name][job_id] - started_at[job_id]) / wait)
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="simulated runs (seeds 0..runs-1)")
    parser.add_argument("--seconds", type=float, default=150, help="how long users submit in each run")
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--load", type=float, default=0.8, help="submitted work over the workers' capacity")
    parser.add_argument("--window", type=float, default=3600, help="VIDEOGEN_FAIR_WINDOW, seconds")
    parser.add_argument("--simulations", type=int, default=0,
                        help="also the 'simulated' estimator, from this many plays per job (slow: 100 takes minutes)")
    parser.add_argument("--bench-arrivals", action="store_true",
                        help="the submits bench/fairness.py --parts eta makes (3 users), the same in every run")
    args = parser.parse_args()

    estimators = estimators_of(args)
    pooled = {name: [] for name in estimators}
    per_run = {name: [] for name in estimators}
    for seed in range(args.runs):
        for name, errors in simulate(seed, args).items():
            pooled[name] += errors
            if errors:
                per_run[name].append(statistics.median(abs(error) for error in errors))
    print(f"{args.runs} simulated runs of {args.seconds:g} s: {args.users} users at random, {args.workers} worker(s), "
          f"load {args.load:g}; {len(pooled['catch-up'])} jobs waited >= 1 s")
    print(f"{'estimator':16} {'median':>7} {'p75':>7} {'p90':>7} {'early':>6}   median of one run: median (range)")
    for name in estimators:
        errors = sorted(abs(error) for error in pooled[name])
        early = sum(error < 0 for error in pooled[name]) / len(pooled[name])
        runs = per_run[name]
        print(f"{name:16} {statistics.median(errors):7.1%} {errors[int(len(errors) * 0.75)]:7.1%} "
              f"{errors[int(len(errors) * 0.9)]:7.1%} {early:6.0%}   {statistics.median(runs):.1%} "
              f"({min(runs):.0%}-{max(runs):.0%})")


if __name__ == "__main__":
    main()
