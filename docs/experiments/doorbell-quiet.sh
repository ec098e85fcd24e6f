#!/bin/sh
# SPDX-License-Identifier: Apache-2.0 OR MIT
# Guest script of the doorbell experiment in docs/BENCHMARKS.md (issue 22): spdk_nvme_perf,
# nvme-perf with and without shadow doorbells, and nvme-perf-hold (docs/experiments/doorbell-hold.patch).
mkdir -p /var/run /var/tmp
echo 512 > /proc/sys/vm/nr_hugepages
T=3
R='trtype:PCIe traddr:0000:01:00.0'
one() { n=$1; shift; "$@" > /tmp/o.txt 2>&1; echo "RES $n $(grep -oE "\"iops\": [0-9.]+|Total *: *[0-9.]+|\"sq_doorbells_per_io\": [0-9.]+|\"completions_per_busy_poll\": [0-9.]+" /tmp/o.txt | sort -u | tr "\n" " ")"; rm -f /dev/hugepages/spdk*; rm -rf /var/run/dpdk/spdk*; }
for rep in 1 2 3; do
for wl in "-q 1 -o 4096 -w randread" "-q 32 -o 4096 -w randread" "-q 128 -o 4096 -w randread" "-q 32 -o 4096 -w randwrite" "-q 8 -o 131072 -w read"; do
  echo "== $wl rep $rep"
  one spdk spdk_nvme_perf $wl -t $T -a 1 -c 0x1 -r "$R"
  one shadow nvme-perf $wl -t $T -a 1 -c 0x1 --json --shadow-doorbells
  one mmio nvme-perf $wl -t $T -a 1 -c 0x1 --json
  one hold32 env NVME_EXP_HOLD=32 nvme-perf-hold $wl -t $T -a 1 -c 0x1 --json
done
done
