//! nvme-perf's `--help` text.

/// One-line usage, printed with `--help` above the option list.
pub const USAGE: &str = "usage: nvme-perf -q DEPTH -o BYTES -w WORKLOAD -t SECONDS [-M READ%] [-a WARMUP] [-c MASK] [-r TRID]... [-b BDF]... [-P N] [--io-queue-size N] [-L|-LL] [-Q N] [-d N[%]] [-m] [-N] [-s MB] [-O BYTES] [-i ID] [-g] [-G] [--json] [--plot FILE.svg] [--verify [--seed N]] [--no-sgl] [--multipath [--policy POLICY]]";

/// The option list, for `--help`.
pub const HELP: &str = "\
  -q, --io-depth DEPTH       I/Os kept outstanding per namespace per core (at least 1); what
                             does not fit the queue waits on the driver's pending ring
  -o, --io-size BYTES        I/O size; a multiple of the block size (suffixes k, m allowed)
  -w, --io-pattern WORKLOAD  read, write, randread, randwrite, rw or randrw
  -M, --rwmixread PERCENT    reads in a mixed workload, 0 to 100 (required for rw, randrw)
  -t, --time SECONDS         measured run time
  -a, --warmup-time SECONDS  run this long before measuring (default 0)
  -c, --core-mask MASK       pinned poller cores: hex mask (0x3) or list ([0,2-3]); default 0x1;
                             every core drives every namespace (spdk_nvme_perf's --use-every-core)
  -r, --transport TRID       'trtype:PCIe traddr:0000:01:00.0 ns:1' (repeatable; ns optional);
                             default: every NVMe controller bound to vfio-pci, every namespace
  -b, --allowed-pci-addr BDF only controllers at these PCI addresses (repeatable)
  -P, --num-qpairs N         queue pairs per namespace per core (default 1); the depth is
                             spread over them
      --io-queue-size N      entries per queue pair (default: enough for the depth, at least
                             256, at most CAP.MQES); a deeper depth per queue pair is accepted
                             and its excess waits on the driver's pending ring
  -L, --enable-sw-latency-tracking
                             latency percentiles; -LL adds a histogram
  -Q, --continue-on-error N  keep going when I/O fails, counting the errors; every Nth failure
                             is logged on stderr as spdk_nvme_perf does ('Read completed with
                             error (sct=3, sc=2)', then 'Message suppressed N-1 times: ...')
  -d, --number-ios N[%]      stop each namespace on each core after N I/Os (or N% of the
                             namespace's size in I/Os), or at -t, whichever comes first
  -m, --cpu-usage            busy share of each poller core (polls that found completions)
  -N, --no-shst-notification no shutdown notification at exit: the controllers are only
                             disabled (CC.EN = 0), not flushed and shut down (CC.SHN)
  -s, --hugemem-size MB      DMA memory nvme-perf may use for its buffers, in MiB
  -O, --io-unit-size BYTES   each I/O's buffer is pieces of BYTES (4-byte multiple): one vectored request
  -i, --shmem-grp-id ID      accepted; there is no shared memory here
  -g, --mem-single-seg       accepted; there are no DPDK memory segments here
      --json                 print the results as JSON instead of tables
      --plot FILE.svg        draw IOPS per second and, with -L, each row's latency
                             histogram and CDF into an SVG picture
      --verify               write a pattern derived from LBA and seed and check every read;
                             a workload that writes first fills the namespaces with it
      --seed N               seed of the verify pattern and the random offsets (default 1)
      --no-sgl               describe I/O data with PRPs even where the controller supports
                             SGLs (the default uses an SGL Data Block descriptor then)
      --multipath            drive the multipath bdev of the block layer instead of the
                             controllers' queue pairs: every controller given with -r (or
                             every one bound to vfio-pci) is attached, controllers that
                             reach the same namespace become its paths; per-path I/O
                             counts and failover events are reported
      --policy POLICY        multipath policy: active-passive (default), round-robin or
                             least-queue-depth (with --multipath)
  -G, --enable-debug         the driver's debug messages on stderr (spdk_nvme_perf's -G;
                             here in every build, not only one configured --enable-debug)
  -h, --help                 this text
spdk_nvme_perf's other options (-e -F -R -S -T -U -V -A -C -D -E -k -l -y -z -Z -H -I, the
TCP, RDMA and DPDK options) are recognised and refused with what to do instead.
";
