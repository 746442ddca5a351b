"""
Django's PostgreSQL backend, with one change: the health check that
CONN_HEALTH_CHECKS runs before a persistent connection's first query in each
request (a `SELECT 1` round trip) is skipped when the connection ran a query
less than RECENTLY seconds ago. Under load that check was a second query on
every status poll (bench/RESULTS.md, hot paths); the connections it exists
for are the idle ones, which a database restart or an idle timeout closed
while nobody used them, and those are still checked. A connection that
breaks while in use fails its query, and Django closes it at the end of
that request, as it always has.
"""

import time

from django.db.backends.postgresql import base

RECENTLY = 1.0


class DatabaseWrapper(base.DatabaseWrapper):
    used_at = float("-inf")

    def create_cursor(self, name=None):
        self.used_at = time.monotonic()
        return super().create_cursor(name)

    def close_if_health_check_failed(self):
        if self.connection is not None and time.monotonic() - self.used_at < RECENTLY:
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
