/* SPDX-License-Identifier: Apache-2.0 OR MIT */
/*
 * hello_world: the C API in the spirit of SPDK's hello_world. Attach one controller
 * by transport ID, open its first namespace's bdev, write a block, read it back into
 * another buffer, compare, close everything.
 *
 *   cargo build --release -p nvme-capi
 *   cc -O2 -Icapi/include capi/examples/hello_world.c target/release/libnvmebdev.a \
 *      -lpthread -ldl -lm -o hello_world
 *   ./hello_world 'trtype:PCIe traddr:0000:01:00.0'     (the controller on vfio-pci)
 *
 * The test suite compiles this file and runs it in a QEMU guest (tests/tests/capi.rs).
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nvmebdev.h"

/* What an I/O's callback reports back to the loop that polls for it. */
struct io_done {
	int done;
	bool success;
	uint16_t status;
};

static void io_complete(void *cb_arg, bool success, uint16_t status)
{
	struct io_done *d = cb_arg;
	d->done = 1;
	d->success = success;
	d->status = status;
}

static void on_event(const struct nvme_bdev_event *ev, void *ctx)
{
	(void)ctx;
	printf("event %u on %s (controller %s)\n", ev->kind, ev->bdev ? ev->bdev : "-",
	       ev->controller ? ev->controller : "-");
}

static int fail(const char *what, int rc)
{
	fprintf(stderr, "hello_world: %s failed: %s (%s)\n", what, nvme_last_error(),
		nvme_strerror(rc));
	return 1;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Polls until the I/O's callback ran, for at most 10 seconds. */
static int wait_io(struct nvme_channel *ch, struct io_done *d, const char *what)
{
	double deadline = now_s() + 10.0;
	while (!d->done) {
		int rc = nvme_channel_poll(ch);
		if (rc < 0)
			return fail("nvme_channel_poll", rc);
		if (now_s() > deadline) {
			fprintf(stderr, "hello_world: the %s did not complete in 10 s\n", what);
			return 1;
		}
	}
	if (!d->success) {
		fprintf(stderr, "hello_world: the %s failed with NVMe status 0x%04x\n", what,
			d->status);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *trid = argc > 1 ? argv[1] : "trtype:PCIe traddr:0000:01:00.0";
	struct nvme_layer *layer = NULL;
	struct nvme_bdev *bdev = NULL;
	struct nvme_channel *ch = NULL;
	struct nvme_bdev_info info;
	void *wbuf = NULL, *rbuf = NULL;
	struct io_done d;
	int rc, status = 1;

	rc = nvme_layer_create(NULL, &layer);
	if (rc < 0)
		return fail("nvme_layer_create", rc);
	rc = nvme_layer_attach(layer, "Nvme0", trid);
	if (rc < 0) {
		fail("nvme_layer_attach", rc);
		goto out_layer;
	}
	printf("Attached to %s: %d bdevs\n", trid, rc);

	rc = nvme_bdev_open(layer, "Nvme0n1", on_event, NULL, &bdev);
	if (rc < 0) {
		fail("nvme_bdev_open", rc);
		goto out_layer;
	}
	nvme_bdev_get_info(bdev, &info);
	printf("Opened %s: %llu blocks of %u bytes\n", info.name,
	       (unsigned long long)info.num_blocks, info.block_size);

	rc = nvme_channel_open(bdev, &ch);
	if (rc < 0) {
		fail("nvme_channel_open", rc);
		goto out_bdev;
	}
	if ((rc = nvme_dma_alloc(layer, info.block_size, &wbuf)) < 0 ||
	    (rc = nvme_dma_alloc(layer, info.block_size, &rbuf)) < 0) {
		fail("nvme_dma_alloc", rc);
		goto out_channel;
	}
	snprintf(wbuf, info.block_size, "%s", "Hello world!\n");

	memset(&d, 0, sizeof(d));
	rc = nvme_bdev_write(ch, wbuf, 0, info.block_size, io_complete, &d);
	if (rc < 0) {
		fail("nvme_bdev_write", rc);
		goto out_channel;
	}
	if (wait_io(ch, &d, "write"))
		goto out_channel;

	memset(&d, 0, sizeof(d));
	rc = nvme_bdev_read(ch, rbuf, 0, info.block_size, io_complete, &d);
	if (rc < 0) {
		fail("nvme_bdev_read", rc);
		goto out_channel;
	}
	if (wait_io(ch, &d, "read"))
		goto out_channel;

	if (memcmp(wbuf, rbuf, info.block_size) != 0) {
		fprintf(stderr, "hello_world: the block read back differs from the one written\n");
		goto out_channel;
	}
	printf("Read back: %s", (char *)rbuf);
	status = 0;

out_channel:
	if (wbuf)
		nvme_dma_free(layer, wbuf);
	if (rbuf)
		nvme_dma_free(layer, rbuf);
	nvme_bdev_poll_events(bdev);
	if ((rc = nvme_channel_close(ch)) < 0)
		status = fail("nvme_channel_close", rc);
out_bdev:
	if ((rc = nvme_bdev_close(bdev)) < 0)
		status = fail("nvme_bdev_close", rc);
out_layer:
	/* The orderly stop: flush, shutdown notification, wait for CSTS.SHST. */
	if ((rc = nvme_layer_destroy(layer)) < 0)
		status = fail("nvme_layer_destroy", rc);
	return status;
}
