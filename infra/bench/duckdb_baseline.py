#!/usr/bin/env python3
"""The peer baseline for `streamlens bench`: DuckDB on the same archive.

Computes what the default bench spec computes — 1-minute tumbling windows by `status`, net sums
of `amount` with retractions (INSERT adds the new image, REMOVE subtracts the old, MODIFY both) and
event counts — straight from the newline-delimited Streams records, parse included, and prints
events/s. Needs `pip install duckdb`.

    python3 infra/bench/duckdb_baseline.py data/bench/orders-1000000-seed7-disorder5s.ndjson [threads] [--detect]

By default DuckDB is told the columns to read (only those the query needs: its fastest way);
`--detect` lets it detect the records' schema instead, as `read_json` does when not told.
"""
import sys
import time

import duckdb

args = [a for a in sys.argv[1:] if a != "--detect"]
detect = "--detect" in sys.argv[1:]
path = args[0]
threads = int(args[1]) if len(args) > 1 else 2
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
columns = {
    "eventName": "VARCHAR",
    "dynamodb": (
        "STRUCT(ApproximateCreationDateTime BIGINT, "
        "NewImage STRUCT(status STRUCT(S VARCHAR), amount STRUCT(N VARCHAR)), "
        "OldImage STRUCT(status STRUCT(S VARCHAR), amount STRUCT(N VARCHAR)))"
    ),
}
query = f"""
WITH r AS (
  SELECT eventName AS kind,
         dynamodb.ApproximateCreationDateTime // 60 * 60 AS w,
         dynamodb.NewImage.status.S AS ns,
         CAST(dynamodb.NewImage.amount.N AS DECIMAL(38, 2)) AS na,
         dynamodb.OldImage.status.S AS os,
         CAST(dynamodb.OldImage.amount.N AS DECIMAL(38, 2)) AS oa
  FROM read_json(?, format = 'newline_delimited'{"" if detect else f", columns = {columns!r}"})
), rows AS (
  SELECT w, ns AS status, na AS amount, 1 AS c,
         (kind = 'INSERT')::INT AS ins, (kind = 'MODIFY')::INT AS mods, 0 AS rems
  FROM r WHERE ns IS NOT NULL
  UNION ALL
  SELECT w, os, -oa, -1, 0, 0, (kind = 'REMOVE')::INT FROM r WHERE os IS NOT NULL
)
SELECT w, status, sum(ins), sum(mods), sum(rems), sum(c), sum(amount)
FROM rows GROUP BY w, status
"""
start = time.perf_counter()
cpu = time.process_time()
result = con.execute(query, [path]).fetchall()
wall = time.perf_counter() - start
# The aggregation's CPU time alone (the count below is not part of it).
cpu = time.process_time() - cpu
events = con.execute(
    f"SELECT count(*) FROM read_json(?, format = 'newline_delimited', columns = {{'eventName': 'VARCHAR'}})",
    [path],
).fetchone()[0]
print(
    f"duckdb {duckdb.__version__} ({threads} threads{', schema detected' if detect else ''}): "
    f"{events} changes in {wall:.2f} s: "
    f"{events / wall:,.0f} events/s, cpu {cpu:.2f} s, {len(result)} groups"
)
