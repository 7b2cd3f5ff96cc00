#!/usr/bin/env python3
"""Run a KQL query locally over Application Insights-shaped rows, with duckdb-kql on DuckDB.

    run_query.py DIR QUERY.kql [--now ISO] [--set NAME=VALUE]...

DIR holds traces.jsonl and requests.jsonl (either may be absent: an empty table), one Application
Insights row per line, with the classic column names: traces {timestamp, message, severityLevel,
customDimensions, operation_Id, ...}, requests {timestamp, id, name, url, resultCode (string),
success (bool), duration (ms), operation_Id, customDimensions, ...}. Each table gets every column
the classic schema has (scripts/kql/appinsights-schema.json), typed as DuckDB types: datetime ->
TIMESTAMP (UTC), dynamic -> JSON, int -> INTEGER, real -> DOUBLE, string -> VARCHAR; a column a row
leaves out is null, except itemCount, which is 1 as Application Insights records for an unsampled
item. A key the schema does not have is refused (a misspelt fixture would otherwise pass silently).
`success` is loaded as BOOLEAN by default; --success-as-string loads it as the text "True"/"False"
instead, the type Microsoft's classic schema lists, to show a query right with either.

The query runs as written, except that --set NAME=VALUE rewrites its `let NAME = ...;` default line,
the way the Bicep templates do. ago() and now() read --now, else DIR/fixture.json's "now", else the
clock.

Prints the result rows as one JSON array of objects on stdout. Exit status:
  0  the query ran (the array may be empty)
  1  bad arguments or input rows
  2  duckdb-kql cannot translate the query (refused, or a syntax it does not parse): never an empty
     result in its place
  3  DuckDB failed running the translated SQL
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import re
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import duckdb_kql

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "scripts" / "kql" / "appinsights-schema.json"
TABLES = ("traces", "requests")
DUCKDB_TYPES = {
    "datetime": "TIMESTAMP",
    "dynamic": "JSON",
    "int": "INTEGER",
    "long": "BIGINT",
    "real": "DOUBLE",
    "string": "VARCHAR",
    "bool": "BOOLEAN",
}


class InputError(Exception):
    """Arguments or rows this cannot load."""


class TranslationError(Exception):
    """duckdb-kql cannot translate the query."""


def columns(table: str, success_as_string: bool = False) -> dict[str, str]:
    """Column -> DuckDB type for one classic Application Insights table."""
    kql_types = json.loads(SCHEMA.read_text())["tables"][table]
    out = {name: DUCKDB_TYPES[t] for name, t in kql_types.items()}
    if "success" in out:
        out["success"] = "VARCHAR" if success_as_string else "BOOLEAN"
    return out


def timestamp(value: Any, where: str) -> dt.datetime:
    if not isinstance(value, str):
        raise InputError(f"{where}: timestamp must be an ISO 8601 string, got {value!r}")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise InputError(f"{where}: timestamp {value!r}: {exc}") from None
    if moment.tzinfo is None:
        raise InputError(f"{where}: timestamp {value!r} has no offset (write Z for UTC)")
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


def cell(value: Any, duck_type: str, column: str, where: str) -> Any:
    if value is None:
        return None
    if duck_type == "TIMESTAMP":
        return timestamp(value, where)
    if duck_type == "JSON":
        return json.dumps(value)
    if column == "success" and duck_type == "VARCHAR":
        if not isinstance(value, bool):
            raise InputError(f"{where}: success must be true or false, got {value!r}")
        return "True" if value else "False"
    expected = {
        "VARCHAR": (str,),
        "INTEGER": (int,),
        "BIGINT": (int,),
        "DOUBLE": (int, float),
        "BOOLEAN": (bool,),
    }[duck_type]
    if not isinstance(value, expected) or (duck_type != "BOOLEAN" and isinstance(value, bool)):
        raise InputError(f"{where}: {column} must be {duck_type.lower()}, got {value!r}")
    return value


def load(con: duckdb.DuckDBPyConnection, table: str, path: Path, success_as_string: bool) -> int:
    cols = columns(table, success_as_string)
    con.execute(
        f'CREATE TABLE "{table}" ('
        + ", ".join(f'"{name}" {t}' for name, t in cols.items())
        + ")"
    )
    if not path.exists():
        return 0
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not JSON: {exc}") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: a row must be a JSON object")
        unknown = sorted(set(row) - set(cols))
        if unknown:
            raise InputError(f"{where}: {table} has no column {', '.join(unknown)}")
        row.setdefault("itemCount", 1)
        rows.append([cell(row.get(name), t, name, where) for name, t in cols.items()])
    if rows:
        # One statement for all rows: executemany runs one INSERT per row, which is slow.
        one = "(" + ", ".join("CAST(? AS JSON)" if t == "JSON" else "?" for t in cols.values()) + ")"
        con.execute(
            f'INSERT INTO "{table}" VALUES ' + ", ".join([one] * len(rows)),
            [value for row in rows for value in row],
        )
    return len(rows)


def set_defaults(query: str, settings: list[str]) -> str:
    """Rewrite `let NAME = ...;` lines as the Bicep templates do."""
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise InputError(f"--set {setting!r}: expected NAME=VALUE")
        pattern = re.compile(rf"^let {re.escape(name)} = [^;\n]+;$", re.MULTILINE)
        if not pattern.search(query):
            raise InputError(f"--set {name}: the query has no `let {name} = ...;` line")
        query = pattern.sub(lambda _m: f"let {name} = {value};", query)
    return query


def jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat(timespec="microseconds") + "Z"
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


@functools.lru_cache(maxsize=64)
def translate(query: str, schema: tuple, query_now: dt.datetime | None) -> Any:
    """duckdb_kql.to_sql, kept: selfcheck.py runs each query over many fixtures."""
    try:
        sql = duckdb_kql.to_sql(query, schema={t: list(c) for t, c in schema}, query_now=query_now)
    except duckdb_kql.KqlError as exc:
        # KqlUnsupportedError (a construct it refuses), KqlSyntaxError (text its grammar does not
        # parse) and KqlSchemaError: none of them may look like "no rows".
        raise TranslationError(f"{type(exc).__name__}: {exc}") from None
    if sql.unbound:
        raise TranslationError(f"query parameters without a value: {', '.join(sql.unbound)}")
    return sql


def run(
    directory: Path,
    query: str,
    now: str | None = None,
    settings: list[str] | None = None,
    success_as_string: bool = False,
) -> list[dict[str, Any]]:
    """The query's rows over the tables in *directory*; raises InputError or TranslationError."""
    if now is None:
        meta = directory / "fixture.json"
        if meta.exists():
            now = json.loads(meta.read_text()).get("now")
    query_now = None if now is None else timestamp(now, "--now")
    query = set_defaults(query, settings or [])

    con = duckdb_kql.connect()  # sets TimeZone to UTC, which the translated SQL assumes
    for table in TABLES:
        load(con, table, directory / f"{table}.jsonl", success_as_string)
    schema = duckdb_kql.engine.schema(con)
    sql = translate(query, tuple((t, tuple(c)) for t, c in schema.items()), query_now)
    relation = con.sql(str(sql), params=sql.parameters) if sql.parameters else con.sql(str(sql))
    names = relation.columns
    types = [str(t) for t in relation.types]
    out = []
    for row in relation.fetchall():
        record = {}
        for name, duck_type, value in zip(names, types, row):
            if duck_type == "JSON" and isinstance(value, str):
                value = json.loads(value)
            record[name] = jsonable(value)
        out.append(record)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a KQL query with duckdb-kql over traces.jsonl and requests.jsonl."
    )
    parser.add_argument("directory", type=Path, help="holds traces.jsonl and requests.jsonl")
    parser.add_argument("query", type=Path, help="the .kql file")
    parser.add_argument("--now", help="what ago() and now() read, ISO 8601 with an offset")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE",
        help="rewrite the query's `let NAME = ...;` default (repeatable)",
    )
    parser.add_argument(
        "--success-as-string", action="store_true",
        help='load requests.success as "True"/"False" text instead of BOOLEAN',
    )
    args = parser.parse_args(argv)
    try:
        if not args.directory.is_dir():
            raise InputError(f"{args.directory}: not a directory")
        query = args.query.read_text()
        rows = run(args.directory, query, args.now, args.set, args.success_as_string)
    except (InputError, OSError) as exc:
        print(f"run_query: {exc}", file=sys.stderr)
        return 1
    except TranslationError as exc:
        print(f"run_query: duckdb-kql cannot translate {args.query}: {exc}", file=sys.stderr)
        return 2
    except duckdb.Error as exc:
        print(f"run_query: DuckDB failed running {args.query}: {exc}", file=sys.stderr)
        return 3
    json.dump(rows, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
