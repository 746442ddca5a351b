"""
Django's PostgreSQL backend, with two changes.

The health check that CONN_HEALTH_CHECKS runs before a persistent
connection's first query in each request (a `SELECT 1` round trip) is
skipped when the connection ran a query less than RECENTLY seconds ago.
Under load that check was a second query on every status poll
(bench/RESULTS.md, hot paths); the connections it exists for are the idle
ones, which a database restart or an idle timeout closed while nobody used
them, and those are still checked. A connection that breaks while in use
fails its query, and Django closes it at the end of that request, as it
always has.

prepared_cursor(): a cursor whose statements PostgreSQL parses and plans
once per connection, for the few statements the hot paths run over and
over (jobs.models.compiled.CompiledOnce: a status poll's read, a submit's INSERT).
Parsing and planning them each time cost the database more than running
them (bench/statements.py, bench/RESULTS.md). Django's own cursors still bind
parameters on the client, which never prepares anything. With the option
`prepare_threshold` at None (VIDEOGEN_DB_PREPARED_STATEMENTS=false, for a
pooler that cannot carry prepared statements across its server
connections, such as PgBouncer before 1.21 in transaction mode),
prepared_cursor() is the plain cursor.
"""

import time

from django.db.backends.postgresql import base, operations
from django.utils.asyncio import async_unsafe
from psycopg import errors, pq

RECENTLY = 1.0


class PreparedCursor(base.ServerBindingCursor):
    """A cursor with server-side parameters that prepares what it executes (psycopg keeps them per connection)."""

    def execute(self, query, params=None, *, prepare=True, binary=None):
        try:
            return super().execute(query, params, prepare=prepare, binary=binary)
        except errors.FeatureNotSupported:
            # "cached plan must not change result type": a migration run by
            # another process changed the type of a column this statement
            # returns, and PostgreSQL will not run the plan it kept. Outside
            # a transaction the statement runs again unprepared, and so does
            # everything else on this connection until it is replaced
            # (CONN_MAX_AGE): the next connection prepares against the new
            # schema. Inside one, the transaction is lost either way.
            if self.connection.info.transaction_status != pq.TransactionStatus.IDLE:
                raise
            self.connection.prepare_threshold = None
            return super().execute(query, params, prepare=False, binary=binary)


class DatabaseOperations(operations.DatabaseOperations):
    def last_executed_query(self, cursor, sql, params):
        # For DEBUG's and the tests' record of queries. A PreparedCursor sends
        # its parameters apart from the SQL, so psycopg has no query text with
        # them written in: compose it, as Django does with server-side binding.
        if isinstance(cursor, PreparedCursor):
            try:
                return self.compose_sql(sql, params)
            except errors.DataError:
                return None
        return super().last_executed_query(cursor, sql, params)


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
    used_at = float("-inf")

    def create_cursor(self, name=None):
        self.used_at = time.monotonic()
        return super().create_cursor(name)

    @async_unsafe
    def prepared_cursor(self):
        """cursor(), whose statements are prepared unless prepare_threshold is None (see the module's docstring)."""
        self.close_if_health_check_failed()
        self.ensure_connection()
        if self.connection.prepare_threshold is None:
            return self._cursor()
        with self.wrap_database_errors:
            self.used_at = time.monotonic()
            return self._prepare_cursor(PreparedCursor(self.connection))

    def close_if_health_check_failed(self):
        if self.connection is not None and time.monotonic() - self.used_at < RECENTLY:
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
