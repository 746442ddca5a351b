"""Queue snapshots rebuilt in the polling thread, for tests and benchmarks that read their own uncommitted rows."""

from jobs.scheduling import estimates


class InlineRebuilds(estimates.Rebuilds):
    """
    A stale snapshot is rebuilt in the polling thread, at once: a background
    thread has its own database connection, and cannot see a test's
    uncommitted rows. A submit starts nothing; its first poll builds.
    """

    def stale(self, queue, job):
        return estimates.build_now(queue, job)

    def entered(self, queue, job) -> None:
        pass
