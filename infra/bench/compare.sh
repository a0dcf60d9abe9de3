#!/usr/bin/env bash
# streamlens against DuckDB on the same archive, run in alternation.
#
# This machine's speed changes by ±30% from one minute to the next, so two series run minutes
# apart compare the machine as much as the programs. Here each streamlens run is followed at once
# by a DuckDB run on the same file, and the medians and the per-pair ratios are printed.
#
#   infra/bench/compare.sh data/bench/orders-1000000-seed7-disorder5s.ndjson [pairs] [binary]
#
# `pairs` defaults to 5; `binary` to target/dist/streamlens, the build to measure (build it with
# `cargo build --profile dist`: release with fat LTO and one codegen unit, ~23–27 min from clean on
# two cores; `target/release/streamlens` works too, ~3% more instructions per change). Needs
# `pip install duckdb`. Stop moto and osmem-server first
# (`infra/scripts/services.sh stop`): idle, they still take CPU. One unmeasured streamlens run
# first brings the file into the page cache.
set -euo pipefail

file=${1:?usage: compare.sh FILE [PAIRS] [BINARY]}
pairs=${2:-5}
bin=${3:-target/dist/streamlens}
here=$(cd "$(dirname "$0")" && pwd)
[ -f "$file" ] || { echo "compare.sh: no archive at $file" >&2; exit 2; }
[ -x "$bin" ] || { echo "compare.sh: no streamlens binary at $bin (cargo build --profile dist)" >&2; exit 2; }
records=$(wc -l < "$file" | tr -d ' ')

# events/s and CPU seconds of one streamlens run.
streamlens() {
  "$bin" bench --records "$records" --file "$file" 2>/dev/null |
    sed -n 's/.*: \([0-9]*\) events\/s, cpu \([0-9.]*\) s.*/\1 \2/p'
}
# events/s and CPU seconds of one DuckDB run.
duckdb() {
  python3 "$here/duckdb_baseline.py" "$file" | tail -n 1 |
    sed -n 's/.*: \([0-9,]*\) events\/s, cpu \([0-9.]*\) s.*/\1 \2/p' | tr -d ,
}

streamlens > /dev/null
rows=()
printf '%-5s %14s %8s %14s %8s %7s %7s\n' pair streamlens/s cpu_s duckdb/s cpu_s speed cpu
for i in $(seq 1 "$pairs"); do
  read -r s_rate s_cpu < <(streamlens)
  read -r d_rate d_cpu < <(duckdb)
  [ -n "${s_rate:-}" ] && [ -n "${d_rate:-}" ] || { echo "compare.sh: a run printed no figures" >&2; exit 1; }
  speed=$(awk -v a="$s_rate" -v b="$d_rate" 'BEGIN { printf "%.2f", a / b }')
  cpu=$(awk -v a="$d_cpu" -v b="$s_cpu" 'BEGIN { printf "%.2f", a / b }')
  printf '%-5s %14s %8s %14s %8s %6sx %6sx\n' "$i" "$s_rate" "$s_cpu" "$d_rate" "$d_cpu" "$speed" "$cpu"
  rows+=("$s_rate $d_rate $speed $cpu")
done
printf '%s\n' "${rows[@]}" | awk '
  { s[NR] = $1; d[NR] = $2; r[NR] = $3; c[NR] = $4 }
  function median(a, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    printf "medians: streamlens %.0f events/s, duckdb %.0f events/s, speed ratio %.2fx, cpu ratio %.2fx\n",
      median(s, NR), median(d, NR), median(r, NR), median(c, NR)
  }'
