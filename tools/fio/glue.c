/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The fio side of the engines: fio's structs, options and hooks, in as few lines as
 * possible; every decision is made in Rust (src/ffi.rs). Two engines, drop-ins for
 * SPDK's fio plugins:
 *   spdk       files are NVMe namespaces: "trtype=PCIe traddr=0000.01.00.0 ns=1"
 *   spdk_bdev  files are bdevs of an SPDK-style JSON config (spdk_json_conf)
 * Both are registered by a constructor (LD_PRELOAD=libnvme_fio.so fio --ioengine=spdk);
 * `spdk` is also what `get_ioengine` (exported from Rust: a cdylib exports only Rust's
 * symbols) hands to fio's --ioengine=external:/path/libnvme_fio.so loader.
 *
 * Built against a configured fio source tree of the fio that loads it (build.rs).
 * License: GPL-2.0-only, as fio (see Cargo.toml).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fio.h"
#include "optgroup.h"

/* ---- Rust (src/ffi.rs) ----------------------------------------------------------- */
enum { KIND_NVME = 0, KIND_BDEV = 1 };
enum { OP_READ = 0, OP_WRITE = 1, OP_TRIM = 2, OP_FLUSH = 3 };
enum { QUEUED = 0, BUSY = 1 }; /* any other value of nvme_fio_queue: an errno */

extern void nvme_fio_set_logger(void (*err)(const char *msg), void (*info)(const char *msg));
extern int nvme_fio_global_setup(int kind, const char *json_conf, unsigned mem_size_mb);
extern int nvme_fio_bdev_names(int index, char *out, size_t len);
extern int nvme_fio_resolve(int kind, const char *filename, uint32_t *target, uint64_t *size);
extern void nvme_fio_thread_reap_all(void *t);
extern void *nvme_fio_thread_new(int kind, const char *job, unsigned iodepth, int print_qid,
				 int stats);
extern int nvme_fio_open(void *t, uint32_t target, const char *filename, uint32_t *slot);
extern int nvme_fio_iomem_alloc(void *t, size_t len, void **ptr);
extern int nvme_fio_queue(void *t, uint32_t slot, int op, uint64_t offset, uint64_t len,
			  void *buf, void *io_u);
extern int nvme_fio_getevents(void *t, unsigned min, unsigned max, int64_t timeout_ns);
extern void *nvme_fio_event(void *t, int i, uint16_t *status);
extern void nvme_fio_report_error(void *t, uint32_t slot, uint16_t status, uint64_t offset);
extern void nvme_fio_thread_free(void *t);
extern const char *nvme_fio_check_loader(const char *running_fio_version);
extern void nvme_fio_set_ops(struct ioengine_ops *spdk);
extern void nvme_fio_shutdown(void);

static void log_to_fio(const char *msg)
{
	log_err("%s\n", msg);
}

static void info_to_fio(const char *msg)
{
	log_info("%s\n", msg);
}

/* ---- options --------------------------------------------------------------------- */
/*
 * Every option SPDK's NVMe plugin defines, with SPDK's defaults, so SPDK job files
 * parse. Those that mean something here are used; any other set to a non-default value
 * stops the job with a message naming it (nvme_setup). An option's off1 may not be 0,
 * hence the pad.
 */
struct nvme_opts {
	void *pad;
	unsigned int enable_wrr;
	unsigned int arbitration_burst;
	unsigned int low_weight;
	unsigned int medium_weight;
	unsigned int high_weight;
	unsigned int wrr_priority;
	unsigned int enable_interrupts;
	unsigned int mem_size_mb;
	int shm_id;
	unsigned int enable_sgl;
	unsigned int sge_size;
	unsigned int disable_pcie_sgl_merge;
	unsigned int bit_bucket_data_len;
	char *hostnqn;
	char *digest_enable;
	unsigned int pi_act;
	char *pi_chk;
	unsigned int md_per_io_size;
	unsigned int apptag;
	unsigned int apptag_mask;
	unsigned int enable_vmd;
	unsigned int initial_zone_reset;
	unsigned int zone_append;
	unsigned int print_qid_mappings;
	char *log_flags;
	unsigned int spdk_tracing;
	unsigned int nvme_stats;
};

#define INT_OPT(n, field, d, h)                                                     \
	{ .name = n, .lname = n, .type = FIO_OPT_INT,                               \
	  .off1 = offsetof(struct nvme_opts, field), .def = d, .help = h,           \
	  .category = FIO_OPT_C_ENGINE, .group = FIO_OPT_G_INVALID }
#define STR_OPT(n, field, h)                                                        \
	{ .name = n, .lname = n, .type = FIO_OPT_STR_STORE,                         \
	  .off1 = offsetof(struct nvme_opts, field), .help = h,                     \
	  .category = FIO_OPT_C_ENGINE, .group = FIO_OPT_G_INVALID }

static struct fio_option nvme_options[] = {
	INT_OPT("enable_wrr", enable_wrr, "0", "Weighted round robin arbitration (not supported)"),
	INT_OPT("arbitration_burst", arbitration_burst, "0", "WRR arbitration burst (not supported)"),
	INT_OPT("low_weight", low_weight, "0", "WRR low priority weight (not supported)"),
	INT_OPT("medium_weight", medium_weight, "0", "WRR medium priority weight (not supported)"),
	INT_OPT("high_weight", high_weight, "0", "WRR high priority weight (not supported)"),
	INT_OPT("wrr_priority", wrr_priority, "0", "WRR queue priority (not supported)"),
	INT_OPT("enable_interrupts", enable_interrupts, "0", "Interrupt-driven completions (not supported: the driver polls)"),
	INT_OPT("mem_size_mb", mem_size_mb, "0", "DMA memory to reserve up front, MiB (0: grow on demand)"),
	INT_OPT("shm_id", shm_id, "-1", "SPDK shared memory ID (accepted; no shared memory here)"),
	INT_OPT("enable_sgl", enable_sgl, "0", "Describe data with SGLs (not supported yet: PRPs)"),
	INT_OPT("sge_size", sge_size, "4096", "SGL element size (with enable_sgl)"),
	INT_OPT("disable_pcie_sgl_merge", disable_pcie_sgl_merge, "0", "Do not merge SGL elements (not supported)"),
	INT_OPT("bit_bucket_data_len", bit_bucket_data_len, "0", "SGL bit bucket length (not supported)"),
	STR_OPT("hostnqn", hostnqn, "Host NQN for fabrics transports (not supported: PCIe only)"),
	STR_OPT("digest_enable", digest_enable, "NVMe/TCP header/data digests (not supported: PCIe only)"),
	INT_OPT("pi_act", pi_act, "1", "Protection information action (no PI support; meaningful only with pi_chk)"),
	STR_OPT("pi_chk", pi_chk, "Protection information checks (not supported)"),
	INT_OPT("md_per_io_size", md_per_io_size, "4096", "Separate metadata buffer size (meaningful only with PI)"),
	INT_OPT("apptag", apptag, "4660", "PI application tag (meaningful only with PI)"),
	INT_OPT("apptag_mask", apptag_mask, "65535", "PI application tag mask (meaningful only with PI)"),
	INT_OPT("enable_vmd", enable_vmd, "0", "Intel VMD enumeration (not supported)"),
	INT_OPT("initial_zone_reset", initial_zone_reset, "0", "Reset zones at start (zoned namespaces not supported)"),
	INT_OPT("zone_append", zone_append, "0", "Zone append (zoned namespaces not supported)"),
	INT_OPT("print_qid_mappings", print_qid_mappings, "0", "Print 'job NAME: FILE qid N' for each file"),
	STR_OPT("log_flags", log_flags, "SPDK log flags (not supported; the engine logs errors only)"),
	INT_OPT("spdk_tracing", spdk_tracing, "0", "SPDK tracing (not supported)"),
	/* This engine's own: */
	INT_OPT("nvme_stats", nvme_stats, "0", "Print each file's I/O count (and per-path counts) at the end of each thread"),
	{ .name = NULL },
};

struct bdev_opts {
	void *pad;
	char *json_conf;
	unsigned int spdk_mem;
	unsigned int spdk_single_seg;
	char *log_flags;
	unsigned int initial_zone_reset;
	unsigned int zone_append;
	char *spdk_conf;
	char *env_context;
	char *spdk_rpc_listen_addr;
	unsigned int nvme_stats;
};

#define BINT_OPT(n, field, d, h)                                                    \
	{ .name = n, .lname = n, .type = FIO_OPT_INT,                               \
	  .off1 = offsetof(struct bdev_opts, field), .def = d, .help = h,           \
	  .category = FIO_OPT_C_ENGINE, .group = FIO_OPT_G_INVALID }
#define BSTR_OPT(n, field, h)                                                       \
	{ .name = n, .lname = n, .type = FIO_OPT_STR_STORE,                         \
	  .off1 = offsetof(struct bdev_opts, field), .help = h,                     \
	  .category = FIO_OPT_C_ENGINE, .group = FIO_OPT_G_INVALID }

static struct fio_option bdev_options[] = {
	BSTR_OPT("spdk_json_conf", json_conf, "SPDK JSON configuration file (bdev subsystem)"),
	BINT_OPT("spdk_mem", spdk_mem, "0", "DMA memory to reserve up front, MiB (0: grow on demand)"),
	BINT_OPT("spdk_single_seg", spdk_single_seg, "0", "One segment per I/O (always the case here)"),
	BSTR_OPT("log_flags", log_flags, "SPDK log flags (not supported; the engine logs errors only)"),
	BINT_OPT("initial_zone_reset", initial_zone_reset, "0", "Reset zones at start (zoned bdevs not supported)"),
	BINT_OPT("zone_append", zone_append, "0", "Zone append (zoned bdevs not supported)"),
	BSTR_OPT("spdk_conf", spdk_conf, "JSON configuration file (SPDK's older name for spdk_json_conf)"),
	BSTR_OPT("env_context", env_context, "SPDK environment context (not supported: no DPDK environment here)"),
	BSTR_OPT("spdk_rpc_listen_addr", spdk_rpc_listen_addr, "SPDK RPC server address (not supported: no RPC server)"),
	/* This engine's own: */
	BINT_OPT("nvme_stats", nvme_stats, "0", "Print each file's I/O count and per-path counts at the end of each thread"),
	{ .name = NULL },
};

/* An option set to something other than its default: refuse, naming it. */
static int refuse(const char *engine, const char *opt, const char *why)
{
	log_err("%s: option %s is not supported by this engine: %s; remove it from the job\n",
		engine, opt, why);
	return 1;
}

static int nvme_check_options(struct nvme_opts *o)
{
	const char *e = "spdk";
	if (o->enable_wrr) return refuse(e, "enable_wrr", "weighted round robin arbitration is not implemented");
	if (o->arbitration_burst) return refuse(e, "arbitration_burst", "weighted round robin arbitration is not implemented");
	if (o->low_weight || o->medium_weight || o->high_weight)
		return refuse(e, "low_weight/medium_weight/high_weight", "weighted round robin arbitration is not implemented");
	if (o->wrr_priority) return refuse(e, "wrr_priority", "weighted round robin arbitration is not implemented");
	if (o->enable_interrupts) return refuse(e, "enable_interrupts", "the driver polls its queues; there is no interrupt mode");
	if (o->enable_sgl) return refuse(e, "enable_sgl", "the driver describes data with PRPs only (SGLs are not implemented yet)");
	if (o->disable_pcie_sgl_merge) return refuse(e, "disable_pcie_sgl_merge", "SGLs are not implemented");
	if (o->bit_bucket_data_len) return refuse(e, "bit_bucket_data_len", "SGL bit buckets are not implemented");
	if (o->hostnqn) return refuse(e, "hostnqn", "only the PCIe transport exists (no fabrics)");
	if (o->digest_enable) return refuse(e, "digest_enable", "only the PCIe transport exists (no NVMe/TCP digests)");
	if (o->pi_chk) return refuse(e, "pi_chk", "end-to-end protection information is not implemented");
	if (o->enable_vmd) return refuse(e, "enable_vmd", "Intel VMD enumeration is not implemented");
	if (o->initial_zone_reset) return refuse(e, "initial_zone_reset", "zoned namespaces are not supported");
	if (o->zone_append) return refuse(e, "zone_append", "zoned namespaces are not supported");
	if (o->log_flags) return refuse(e, "log_flags", "SPDK's log components do not exist here");
	if (o->spdk_tracing) return refuse(e, "spdk_tracing", "SPDK tracing does not exist here");
	return 0;
}

static int bdev_check_options(struct bdev_opts *o)
{
	const char *e = "spdk_bdev";
	if (o->spdk_conf && o->json_conf)
		return refuse(e, "spdk_conf", "cannot provide two configuration files (spdk_conf and spdk_json_conf)");
	if (o->spdk_conf) o->json_conf = o->spdk_conf;
	if (o->env_context) return refuse(e, "env_context", "there is no DPDK environment to pass it to");
	if (o->spdk_rpc_listen_addr) return refuse(e, "spdk_rpc_listen_addr", "there is no SPDK RPC server");
	if (o->log_flags) return refuse(e, "log_flags", "SPDK's log components do not exist here");
	if (o->initial_zone_reset) return refuse(e, "initial_zone_reset", "zoned bdevs are not supported");
	if (o->zone_append) return refuse(e, "zone_append", "zoned bdevs are not supported");
	return 0;
}

/* ---- hooks ----------------------------------------------------------------------- */

static int resolve_files(struct thread_data *td, int kind)
{
	struct fio_file *f;
	unsigned int i;

	/* The bdev engine's "*" stands for every bdev of the configuration. */
	if (kind == KIND_BDEV && td->o.nr_files == 1 && !strcmp(td->files[0]->file_name, "*")) {
		char name[256];
		td->files[0]->file_name[0] = '\0';
		td->o.nr_files = 0;
		td->files_index = 0;
		for (int b = 0; nvme_fio_bdev_names(b, name, sizeof(name)) > 0; b++)
			add_file(td, name, 0, 0);
		td->o.nr_files = td->files_index;
	}
	for_each_file(td, f, i) {
		uint32_t target;
		uint64_t size;
		if (nvme_fio_resolve(kind, f->file_name, &target, &size))
			return 1;
		f->real_file_size = size;
		f->filetype = FIO_TYPE_BLOCK;
		/* engine_pos: the target (upper half) and, once open, its slot + 1 (lower). */
		f->engine_pos = (uint64_t)target << 32;
		fio_file_set_size_known(f);
	}
	return 0;
}

static int check_thread(struct thread_data *td, const char *engine)
{
	if (!td->o.use_thread) {
		log_err("%s: must set thread=1 when using %s plugin\n", engine, engine);
		return 1;
	}
	return 0;
}

static int nvme_setup(struct thread_data *td)
{
	struct nvme_opts *o = td->eo;
	if (check_thread(td, "spdk") || nvme_check_options(o))
		return 1;
	if (nvme_fio_global_setup(KIND_NVME, NULL, o->mem_size_mb))
		return 1;
	return resolve_files(td, KIND_NVME);
}

static int bdev_setup(struct thread_data *td)
{
	struct bdev_opts *o = td->eo;
	if (check_thread(td, "spdk_bdev") || bdev_check_options(o))
		return 1;
	if (!o->json_conf) {
		log_err("spdk_bdev: no spdk_json_conf given; point it at an SPDK JSON config "
			"with bdev_nvme_attach_controller entries\n");
		return 1;
	}
	if (nvme_fio_global_setup(KIND_BDEV, o->json_conf, o->spdk_mem))
		return 1;
	return resolve_files(td, KIND_BDEV);
}

/*
 * Whether the job set iodepth_batch_complete_max. fio's own test (`fio_option_is_set`)
 * calls a function of the fio binary: it is looked up when the library is loaded, as
 * `fio_version_string` is, so that the library loads into any process (LD_PRELOAD
 * reaches a job's shell too). Without it the option counts as set.
 */
static bool (*option_is_set)(struct thread_options *, unsigned int);

static bool batch_complete_max_set(struct thread_data *td)
{
	return !option_is_set ||
	       option_is_set(&td->o, offsetof(struct thread_options, iodepth_batch_complete_max));
}

static int engine_init(struct thread_data *td, int kind, int print_qid, int stats)
{
	td->io_ops_data = nvme_fio_thread_new(kind, td->o.name, td->o.iodepth, print_qid, stats);
	if (!td->io_ops_data)
		return 1;
	/*
	 * fio 3.33 caps getevents' `max` at iodepth_batch_complete_max, which defaults to
	 * iodepth_batch_complete_min (1): with the defaults fio takes one completion per
	 * call and runs its per-call work (clock reads, accounting, its loop around
	 * getevents) once per I/O. Unless the job sets iodepth_batch_complete_max, every
	 * I/O that has completed is handed back, as fio's null engine and SPDK's bdev
	 * plugin do (both return all they have, whatever `max` says). docs/BENCHMARKS.md:
	 * fio through the engines.
	 */
	if (!batch_complete_max_set(td))
		nvme_fio_thread_reap_all(td->io_ops_data);
	return 0;
}

static int nvme_init(struct thread_data *td)
{
	struct nvme_opts *o = td->eo;
	return engine_init(td, KIND_NVME, o->print_qid_mappings, o->nvme_stats);
}

static int bdev_init(struct thread_data *td)
{
	struct bdev_opts *o = td->eo;
	return engine_init(td, KIND_BDEV, 0, o->nvme_stats);
}

static int engine_open_file(struct thread_data *td, struct fio_file *f)
{
	uint32_t slot;
	if ((uint32_t)f->engine_pos)
		return 0; /* open already: the channel stays until cleanup */
	if (nvme_fio_open(td->io_ops_data, (uint32_t)(f->engine_pos >> 32), f->file_name, &slot))
		return 1;
	f->engine_pos |= slot + 1;
	return 0;
}

static int engine_close_file(struct thread_data *td, struct fio_file *f)
{
	/* The channel lives until the thread's cleanup (its counters are reported then). */
	return 0;
}

static int engine_invalidate(struct thread_data *td, struct fio_file *f)
{
	/* No page cache in the way. */
	return 0;
}

static int engine_iomem_alloc(struct thread_data *td, size_t total)
{
	void *p;
	if (nvme_fio_iomem_alloc(td->io_ops_data, total, &p))
		return 1;
	td->orig_buffer = p;
	return 0;
}

static void engine_iomem_free(struct thread_data *td)
{
	/* Freed with the thread's state (engine_cleanup). */
	td->orig_buffer = NULL;
}

static enum fio_q_status engine_queue(struct thread_data *td, struct io_u *io_u)
{
	uint32_t slot = (uint32_t)io_u->file->engine_pos;
	int op;
	switch (io_u->ddir) {
	case DDIR_READ: op = OP_READ; break;
	case DDIR_WRITE: op = OP_WRITE; break;
	case DDIR_TRIM: op = OP_TRIM; break;
	case DDIR_SYNC:
	case DDIR_DATASYNC: op = OP_FLUSH; break;
	default:
		io_u->error = EINVAL;
		return FIO_Q_COMPLETED;
	}
	if (!slot) {
		io_u->error = EBADF;
		return FIO_Q_COMPLETED;
	}
	int r = nvme_fio_queue(td->io_ops_data, slot - 1, op, io_u->offset,
			       io_u->xfer_buflen, io_u->xfer_buf, io_u);
	if (r == QUEUED)
		return FIO_Q_QUEUED;
	if (r == BUSY)
		return FIO_Q_BUSY;
	io_u->error = r;
	return FIO_Q_COMPLETED;
}

static int engine_getevents(struct thread_data *td, unsigned int min, unsigned int max,
			    const struct timespec *t)
{
	int64_t timeout_ns = t ? (int64_t)t->tv_sec * 1000000000 + t->tv_nsec : -1;
	return nvme_fio_getevents(td->io_ops_data, min, max, timeout_ns);
}

static struct io_u *engine_event(struct thread_data *td, int event)
{
	uint16_t status;
	struct io_u *io_u = nvme_fio_event(td->io_ops_data, event, &status);
	if (status) {
		uint32_t slot = (uint32_t)io_u->file->engine_pos;
		io_u->error = EIO;
		nvme_fio_report_error(td->io_ops_data, slot - 1, status, io_u->offset);
	}
	return io_u;
}

static void engine_cleanup(struct thread_data *td)
{
	if (td->io_ops_data) {
		nvme_fio_thread_free(td->io_ops_data);
		td->io_ops_data = NULL;
	}
}

/*
 * No commit hook: as SPDK's plugin (delay_cmd_submit), the submission queue's doorbell
 * is written once per getevents, by the poll that starts it, for every command queued
 * since. fio always reaps before it waits (thinktime and rate limits quiesce first),
 * so nothing queued sits unannounced; under emulation a doorbell is an exit to the
 * emulator, and one per I/O cost fio+spdk most of its speed at depth.
 */
#define ENGINE_COMMON                                                               \
	.version = FIO_IOOPS_VERSION,                                               \
	.flags = FIO_RAWIO | FIO_NOEXTEND | FIO_NODISKUTIL | FIO_MEMALIGN | FIO_DISKLESSIO,          \
	.queue = engine_queue,                                                      \
	.getevents = engine_getevents,                                              \
	.event = engine_event,                                                      \
	.cleanup = engine_cleanup,                                                  \
	.open_file = engine_open_file,                                              \
	.close_file = engine_close_file,                                            \
	.invalidate = engine_invalidate,                                            \
	.iomem_alloc = engine_iomem_alloc,                                          \
	.iomem_free = engine_iomem_free

/* The NVMe engine. */
static struct ioengine_ops ioengine = {
	.name = "spdk",
	ENGINE_COMMON,
	.setup = nvme_setup,
	.init = nvme_init,
	.option_struct_size = sizeof(struct nvme_opts),
	.options = nvme_options,
};

static struct ioengine_ops bdev_engine = {
	.name = "spdk_bdev",
	ENGINE_COMMON,
	.setup = bdev_setup,
	.init = bdev_init,
	.option_struct_size = sizeof(struct bdev_opts),
	.options = bdev_options,
};

/*
 * Loaded by a fio of another version than the one built against: struct layouts
 * differ, so stop before fio calls anything, with both versions and the fix (fio's own
 * check only says "bad ioops version").
 */
static void check_loader(void)
{
	const char *running = dlsym(RTLD_DEFAULT, "fio_version_string");
	const char *msg = nvme_fio_check_loader(running);
	if (msg) {
		fprintf(stderr, "%s\n", msg);
		fflush(stderr);
		_exit(1);
	}
}

static int registered;

__attribute__((constructor)) static void nvme_fio_register(void)
{
	check_loader();
	*(void **)&option_is_set = dlsym(RTLD_DEFAULT, "__fio_option_is_set");
	nvme_fio_set_logger(log_to_fio, info_to_fio);
	/* The library exports Rust's symbols only, so fio's external: loader finds
	 * `get_ioengine` (Rust), which hands out this struct. */
	nvme_fio_set_ops(&ioengine);
	/* Registered once, whether fio found us by LD_PRELOAD or dlopen (external:). */
	if (!registered) {
		register_ioengine(&ioengine);
		register_ioengine(&bdev_engine);
		registered = 1;
	}
}

__attribute__((destructor)) static void nvme_fio_unregister(void)
{
	/* fio ended normally: flush and shut the controllers down (CC.SHN). */
	nvme_fio_shutdown();
	if (registered) {
		unregister_ioengine(&ioengine);
		unregister_ioengine(&bdev_engine);
		registered = 0;
	}
}
