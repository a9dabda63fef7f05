#!/usr/bin/env bash
# kyso benchmarks: reads OUT/json/*.json of one bench/run.sh run, works out
# each figure's ceiling from the limits measured in the same run, and writes
# OUT/summary.json and OUT/summary.md (the table the README shows).
#
#   bench/summarize.sh OUT MODE WORKERS
#
# Ceilings: a CAdES-T signature costs one C_Sign of the document key and one
# of the TSA key, so its ceiling is min(1 / (1/r_doc + 1/r_tsa), empty gRPC
# rate, synced-write rate); CAdES-BES drops the TSA term; the TSA alone is
# min(r_tsa, gRPC); Put of 8 MiB is compared with RocksDB's raw synced Put
# bandwidth for 8 MiB values.
set -euo pipefail
out=$1 mode=$2 workers=$3

jq -n --arg mode "$mode" --argjson workers "$workers" --arg host "$(hostname -s)" \
  --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  --argjson cores "$(nproc)" --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" '
  [inputs | {key: (input_filename | split("/") | last | rtrimstr(".json")), value: .}]
  | from_entries as $r
  | def rate($lbl): ($r.limit_hsm.results[] | select(.key_label == $lbl) | .throughput);
    def pct(x): (x * 1000 | round) / 10;
    (rate("kyso/personal/bench.rsa.0")) as $rsa
  | (rate("kyso/personal/bench.ec.0")) as $ec
  | (rate("kyso/tsa/default")) as $tsa
  | ($r.limit_grpc_empty.throughput) as $grpc
  | ($r.limit_disk_8k.throughput) as $disk
  | def ceiling(fmt; doc):
      ([(if fmt == "t" then 1 / (1 / doc + 1 / $tsa) else doc end), $grpc, $disk] | min);
    def sign_rows:
      [ ["bes", "rsa", $rsa], ["t", "rsa", $rsa], ["bes", "ec", $ec], ["t", "ec", $ec] ][]
      | . as [$fmt, $alg, $doc]
      | [$r | to_entries[] | select(.key | startswith("sign_\($fmt)_\($alg)_c")) | .value]
      | select(length > 0)
      | (max_by(.throughput)) as $best
      | { scenario: "sign \(if $fmt == "t" then "CAdES-T" else "CAdES-BES" end) \(if $alg == "rsa" then "RSA-2048" else "ECDSA P-256" end), archived",
          throughput: $best.throughput, concurrency: $best.params.concurrency,
          p99_ms: $best.latency_ms.p99, ceiling: ceiling($fmt; $doc),
          ratio_pct: pct($best.throughput / ceiling($fmt; $doc)),
          target: (if $fmt == "t" then ">= 70 %" else "" end),
          curve: [.[] | {concurrency: .params.concurrency, throughput, p50: .latency_ms.p50,
                         p99: .latency_ms.p99}] | sort_by(.concurrency) };
  { machine: {host: $host, cpu: $cpu, cores: $cores, date: $date, mode: $mode,
              kysod_workers: $workers, hsm: "SoftHSM 2 (file token)"},
    limits: { c_sign_rsa2048: $rsa, c_sign_ec_p256: $ec, c_sign_tsa_ec_p256: $tsa,
              grpc_empty_call: $grpc, rocksdb_synced_put_8k: $disk,
              rocksdb_synced_put_8m_bytes_per_s: ($r.limit_disk_8m.bytes_per_s // null) },
    sign: [sign_rows],
    stamp: (if $r.stamp_c16 then {throughput: $r.stamp_c16.throughput,
              ceiling: ([$tsa, $grpc] | min),
              ratio_pct: pct($r.stamp_c16.throughput / ([$tsa, $grpc] | min))} else null end),
    open_loop: (if $r.open_sign_t_ec_half then {rate: $r.open_sign_t_ec_half.params.rate,
              achieved: $r.open_sign_t_ec_half.throughput,
              p50_ms: $r.open_sign_t_ec_half.latency_ms.p50,
              p99_ms: $r.open_sign_t_ec_half.latency_ms.p99,
              p999_ms: $r.open_sign_t_ec_half.latency_ms.p999, target: "p99 <= 10 ms"}
            else null end),
    archive_io: [$r | to_entries[] | select(.key | test("^(put|get)_[0-9]+$")) | .value
              | {scenario: .scenario, size: .params.size, throughput, bytes_per_s,
                 p99_ms: .latency_ms.p99}],
    put_8m_vs_disk: (if $r.put_8388608 and $r.limit_disk_8m then
              {put_bytes_per_s: $r.put_8388608.bytes_per_s,
               disk_bytes_per_s: $r.limit_disk_8m.bytes_per_s,
               ratio_pct: pct($r.put_8388608.bytes_per_s / $r.limit_disk_8m.bytes_per_s),
               target: ">= 70 %"} else null end),
    keys: ((($r | to_entries | map(select(.key | test("^keys_[0-9]+$"))) | map(.value)) as $k
           | if ($k | length) == 2 then
               ($k | sort_by(.params.keys)) as [$one, $many]
               | ($r["keys_\($many.params.keys)_first"].throughput // null) as $first
               | ($r.limit_hsm_keys.results // []) as $raw
               | {one_key: $one.throughput, many_keys: $many.throughput, keys: $many.params.keys,
                  ratio_pct: pct($many.throughput / $one.throughput), target: ">= 90 %",
                  first_use: $first,
                  first_use_pct: (if $first then pct($first / $one.throughput) else null end),
                  raw_c_sign_one: ($raw[0].throughput // null),
                  raw_c_sign_many: ($raw[1].throughput // null),
                  vmrss_ready_mib: (($r.start_keys.vmrss_ready_kib // 0) / 1024 | floor),
                  vmrss_after_mib: (($r.keys_rss.vmrss_kib // 0) / 1024 | floor),
                  import_ec_s: ($r.fill_keys_ec.import_seconds // null),
                  import_rsa_s: ($r.fill_keys_rsa.import_seconds // null),
                  certificates_s: ((($r.fill_keys_ec.certificate_seconds // 0)
                                    + ($r.fill_keys_rsa.certificate_seconds // 0))),
                  kysod_start_s: ($r.start_keys.seconds // null)}
             else null end)),
    archive_scale: (([$r | to_entries[] | select(.key | test("^archive_[0-9]+_sign$")) | .value]
           | sort_by(.label | ltrimstr("archive_") | rtrimstr("_sign") | tonumber)) as $signs
           | (if ($signs | length) > 0 then
               [ $signs[] | (.label | ltrimstr("archive_") | rtrimstr("_sign")) as $n
                 | {documents: ($n | tonumber), sign: .throughput,
                    get: $r["archive_\($n)_get"].throughput,
                    fill_docs_per_s: ($r["fill_archive_\($n)"].documents_per_s // null),
                    vmrss_mib: (($r["archive_rss_\($n)"].vmrss_kib // 0) / 1024 | floor),
                    sign_vs_first_pct: pct(.throughput / $signs[0].throughput),
                    get_vs_first_pct: pct($r["archive_\($n)_get"].throughput
                                          / $r["archive_\($signs[0].label | ltrimstr("archive_") | rtrimstr("_sign"))_get"].throughput)} ]
             else [] end)),
    rss_100mib: (if $r.rss_100mib then {peak_mib: ($r.rss_100mib.vmhwm_peak_kib / 1024 | floor),
                   before_mib: ($r.rss_100mib.vmhwm_before_kib / 1024 | floor)} else null end)
  }' "$out"/json/*.json > "$out/summary.json"

# The markdown table.
jq -r '
  def f: if . == null then "—" elif type == "number" then
           (if . >= 100 then (round | tostring) else ((. * 10 | round) / 10 | tostring) end)
         else tostring end;
  "Machine: \(.machine.cpu), \(.machine.cores) cores; \(.machine.hsm); kysod \(.machine.kysod_workers) workers; \(.machine.date), `bench/run.sh --\(.machine.mode)`.",
  "",
  "**Limits measured in the same run:** C_Sign RSA-2048 \(.limits.c_sign_rsa2048 | f)/s, ECDSA P-256 \(.limits.c_sign_ec_p256 | f)/s, TSA key (P-256) \(.limits.c_sign_tsa_ec_p256 | f)/s; empty gRPC call \(.limits.grpc_empty_call | f)/s; RocksDB synced Put (8 KiB) \(.limits.rocksdb_synced_put_8k | f)/s.",
  "",
  "| scenario | throughput /s | at concurrency | p99 ms | ceiling /s | ratio | target |",
  "|---|---|---|---|---|---|---|",
  (.sign[] | "| \(.scenario) | \(.throughput | f) | \(.concurrency) | \(.p99_ms | f) | \(.ceiling | f) | \(.ratio_pct | f) % | \(.target) |"),
  (if .stamp then "| TSA alone (Stamp) | \(.stamp.throughput | f) | 16 | | \(.stamp.ceiling | f) | \(.stamp.ratio_pct | f) % | |" else empty end),
  (if .open_loop then "| open loop CAdES-T P-256 at \(.open_loop.rate)/s (half of peak) | \(.open_loop.achieved | f) | | **\(.open_loop.p99_ms | f)** (p50 \(.open_loop.p50_ms | f), p99.9 \(.open_loop.p999_ms | f)) | | | p99 ≤ 10 ms |" else empty end),
  (if .put_8m_vs_disk then "| Put 8 MiB vs RocksDB synced Put 8 MiB | \(.put_8m_vs_disk.put_bytes_per_s / 1048576 | f) MiB/s | 2 | | \(.put_8m_vs_disk.disk_bytes_per_s / 1048576 | f) MiB/s | \(.put_8m_vs_disk.ratio_pct | f) % | ≥ 70 % |" else empty end),
  (if .keys then "| CAdES-T P-256 with \(.keys.keys) keys vs 1 key | \(.keys.many_keys | f) vs \(.keys.one_key | f) | 8 | | | \(.keys.ratio_pct | f) % | ≥ 90 % |" else empty end),
  (if .keys and .keys.first_use then "| the same, first use of each key in this kysod | \(.keys.first_use | f) | 8 | | | \(.keys.first_use_pct | f) % | |" else empty end),
  (if .keys and .keys.raw_c_sign_many then "| raw C_Sign P-256, \(.keys.keys) keys round robin vs 1 key | \(.keys.raw_c_sign_many | f) vs \(.keys.raw_c_sign_one | f) | \(.machine.kysod_workers) threads | | | \(.keys.raw_c_sign_many / .keys.raw_c_sign_one * 1000 | round / 10) % | |" else empty end),
  (.archive_scale[] | "| archive at \(.documents) documents: Sign / Get (4 KiB) | \(.sign | f) / \(.get | f) | 8 | | | \(.sign_vs_first_pct | f) % / \(.get_vs_first_pct | f) % of the first | ≥ 80 %; RSS \(.vmrss_mib) MiB (≤ 300) |"),
  "",
  (if (.archive_io | length) > 0 then
     "| archive I/O | size | ops/s | MiB/s | p99 ms |", "|---|---|---|---|---|",
     (.archive_io | sort_by(.scenario, .size)[] | "| \(.scenario) | \(.size) | \(.throughput | f) | \(.bytes_per_s / 1048576 | f) | \(.p99_ms | f) |")
   else empty end),
  "",
  (if .keys then "Key import: \(.keys.keys) EC keys in \(.keys.import_ec_s | f) s, \(.keys.keys) RSA keys in \(.keys.import_rsa_s | f) s, their certificates in \(.keys.certificates_s | f) s; kysod starts with them in \(.keys.kysod_start_s | f) s; its RSS is \(.keys.vmrss_ready_mib) MiB when ready (SoftHSM holds every token object in kysod'"'"'s process) and \(.keys.vmrss_after_mib) MiB once every key has signed." else empty end),
  (if .rss_100mib then "A 100 MiB document streamed in: kysod peak RSS \(.rss_100mib.peak_mib) MiB (\(.rss_100mib.before_mib) MiB before)." else empty end)
' "$out/summary.json" > "$out/summary.md"
