#!/usr/bin/env bash
# kyso benchmarks: PNG plots of one bench/run.sh run (gnuplot):
#   OUT/throughput.png  Sign throughput vs concurrency, with each ceiling
#   OUT/latency_cdf.png latency CDF of CAdES-T P-256, closed and open loop
#   OUT/ratio.png       each figure as a share of its ceiling
#
#   bench/plot.sh OUT
set -euo pipefail
out=$1
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

# One data file per Sign curve: concurrency, throughput; and its ceiling.
jq -r '.sign[] | .scenario' "$out/summary.json" | nl -w1 -s' ' > "$data/names"
plot_lines=""
while read -r i name; do
  jq -r --arg n "$name" '.sign[] | select(.scenario == $n) | .curve[] | "\(.concurrency) \(.throughput)"' \
    "$out/summary.json" > "$data/curve$i"
  ceiling=$(jq -r --arg n "$name" '.sign[] | select(.scenario == $n) | .ceiling' "$out/summary.json")
  plot_lines+="'$data/curve$i' using 1:2 with linespoints lw 2 lc $i title '$name', "
  plot_lines+="$ceiling with lines dt 2 lc $i notitle, "
done < "$data/names"
gnuplot <<GP
set terminal pngcairo size 900,560 font ",10"
set output "$out/throughput.png"
set title "Sign throughput vs concurrency (dashed: each ceiling)"
set xlabel "calls in flight"
set ylabel "signatures / s"
set logscale x 2
set key bottom right
set grid
plot ${plot_lines%, }
GP

# Latency CDFs.
cdf_lines=""
for f in "$out"/json/sign_t_ec_c*.json "$out"/json/open_sign_t_ec_half.json; do
  [ -f "$f" ] || continue
  name=$(basename "$f" .json)
  jq -r '.cdf[] | "\(.[0]) \(.[1])"' "$f" > "$data/$name.cdf"
  cdf_lines+="'$data/$name.cdf' using 1:2 with lines lw 2 title '$name', "
done
gnuplot <<GP
set terminal pngcairo size 900,560 font ",10"
set output "$out/latency_cdf.png"
set title "CAdES-T ECDSA P-256 latency (closed loop by concurrency; open loop at half of peak)"
set xlabel "latency, ms"
set ylabel "fraction of calls"
set logscale x
set key bottom right
set grid
plot ${cdf_lines%, }
GP

# Ratios to ceiling.
jq -r '(.sign[] | "\"\(.scenario | sub(", archived"; ""))\" \(.ratio_pct)"),
       (if .stamp then "\"TSA alone\" \(.stamp.ratio_pct)" else empty end),
       (if .put_8m_vs_disk then "\"Put 8 MiB\" \(.put_8m_vs_disk.ratio_pct)" else empty end),
       (if .keys then "\"\(.keys.keys) keys vs 1\" \(.keys.ratio_pct)" else empty end)' \
  "$out/summary.json" > "$data/ratios"
gnuplot <<GP
set terminal pngcairo size 900,520 font ",10"
set output "$out/ratio.png"
set title "Share of the ceiling measured in the same run"
set style fill solid 0.6
set boxwidth 0.6
set yrange [0:110]
set ylabel "% of ceiling"
set xtics rotate by -25
set grid ytics
set arrow from graph 0, first 70 to graph 1, first 70 nohead dt 2 lc rgb "red"
plot "$data/ratios" using 0:2:xtic(1) with boxes notitle, \
     "" using 0:(\$2 + 3):(sprintf("%.0f %%", \$2)) with labels notitle
GP
echo "plots: $out/throughput.png $out/latency_cdf.png $out/ratio.png" >&2
