"""
SQL the ORM compiles once per process, run with only the values changing.
These lean on the compiler's internals (its placeholders, select list and
converters), so tests/jobs/test_compiled.py pins what they expect of this
Django version: an upgrade that changes them fails there, loudly.
"""

import threading
import uuid
from collections.abc import Callable

from django.db import connections, models
from django.db.models.sql import InsertQuery


class CompiledOnce:
    """
    SQL the ORM compiles once per database (_compile), kept for the
    process. Django compiles a query's SQL on every evaluation: for a status
    poll that took as long as the database took to answer it, and a submit's
    active-job count and INSERT cost more to compile than to run
    (bench/RESULTS.md, hot paths). On PostgreSQL the database keeps them
    parsed and planned too (_prepared_cursor).
    """

    def __init__(self):
        self._compiled: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def compiled(self, alias: str) -> tuple:
        compiled = self._compiled.get(alias)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.setdefault(alias, self._compile(alias))
        return compiled

    def _compile(self, alias: str) -> tuple:
        raise NotImplementedError


class CompiledQuery(CompiledOnce):
    """
    A query, compiled once per database (CompiledOnce). `build` makes the
    queryset from stand-ins for the values named in `fields` (each the model
    field the value is compared with, which prepares it for the database);
    the SQL, its filters (for_user()'s among them) and its column converters
    are the ORM's own, and only those values change between calls.
    """

    def __init__(self, build: Callable[..., models.QuerySet], **fields: models.Field):
        super().__init__()
        self._build = build
        self._fields = fields

    def first(self, alias: str, *, before: tuple[str, list] = ("", []), **values) -> tuple[list[str], list] | None:
        """
        (the columns' attribute names, the first row, converted), or None
        when there is no row. `before`: a statement (SQL, parameters) to run
        first, in the same round trip; PostgreSQL only (client-side binding
        sends both as one simple query, and each statement takes its own
        snapshot).
        """
        sql, slots, names, converters = self.compiled(alias)
        connection = connections[alias]
        params = [
            self._fields[slot].get_db_prep_value(values[slot], connection) if isinstance(slot, str) else slot[1]
            for slot in slots
        ]
        before_sql, before_params = before
        # Prepared once per connection where the backend can (videogen/postgresql); not with `before`, two statements.
        with connection.cursor() if before_sql else _prepared_cursor(connection) as cursor:
            if before_sql:
                cursor.execute(f"{before_sql}; {sql}", [*before_params, *params])
                cursor.nextset()
            else:
                cursor.execute(sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        row = list(row)
        for position, (functions, expression) in converters.items():
            for function in functions:
                row[position] = function(row[position], expression, connection)
        return names, row

    def _compile(self, alias: str) -> tuple:
        connection = connections[alias]
        stand_ins = {name: _stand_in(name, field, number) for number, (name, field) in enumerate(self._fields.items())}
        compiler = self._build(**stand_ins).using(alias).query.get_compiler(using=alias)
        sql, params = compiler.as_sql()
        prepared = {name: self._fields[name].get_db_prep_value(value, connection) for name, value in stand_ins.items()}
        # Each parameter is one of the values, or a constant of the query's to keep as it is.
        slots = [next((name for name, value in prepared.items() if param == value), ("constant", param)) for param in params]
        if sorted(slot for slot in slots if isinstance(slot, str)) != sorted(self._fields):
            raise AssertionError(f"cannot tell the parameters of {sql!r} apart: {params!r}")
        columns = [column for column, _, _ in compiler.select]
        names = [getattr(getattr(column, "target", None), "attname", label) for (column, _, label) in compiler.select]
        return sql, slots, names, compiler.get_converters(columns)


class CompiledInsert(CompiledOnce):
    """
    A model's INSERT of all its columns, compiled once per database
    (CompiledOnce). Each insert only prepares the values, with the fields'
    own pre_save() and get_db_prep_save(), as the ORM's compiler does. For
    models whose save() is the ORM's own, with no signal receivers and no
    column the database fills in (nothing to read back).
    """

    def __init__(self, model: type[models.Model]):
        super().__init__()
        self._model = model

    def insert(self, instance: models.Model, alias: str) -> None:
        sql, fields = self.compiled(alias)
        connection = connections[alias]
        params = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
        with _prepared_cursor(connection) as cursor:
            cursor.execute(sql, params)
        instance._state.adding = False
        instance._state.db = alias

    def _compile(self, alias: str) -> tuple:
        meta = self._model._meta
        if meta.db_returning_fields or any(field.has_db_default() for field in meta.concrete_fields):
            raise TypeError(f"{self._model.__name__} has columns the database fills in")
        fields = list(meta.local_concrete_fields)
        query = InsertQuery(self._model)
        query.insert_values(fields, [self._model()])
        [(sql, params)] = query.get_compiler(using=alias).as_sql()
        if len(params) != len(fields) or sql.count("%s") != len(fields):
            raise AssertionError(f"the INSERT has other placeholders than one per column: {sql!r}")
        return sql, fields


def _prepared_cursor(connection):
    """A cursor whose statements the database keeps parsed and planned (videogen/postgresql), else a plain one."""
    prepared_cursor = getattr(connection, "prepared_cursor", None)
    return connection.cursor() if prepared_cursor is None else prepared_cursor()


def _stand_in(name: str, field: models.Field, number: int):
    """
    A value for the compiler to place that no real value equals: text with a
    NUL (which PostgreSQL cannot store), the nil UUID and its neighbours.
    """
    if isinstance(field, models.UUIDField):
        return uuid.UUID(int=number)
    if isinstance(field, models.CharField):
        return f"\x00{name}"
    raise TypeError(f"no stand-in for a {type(field).__name__}")
