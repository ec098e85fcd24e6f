/* SPDX-License-Identifier: Apache-2.0 OR MIT */
/*
 * Bad input from real C, against libnvmebdev.a (built and run by tests/c_programs.rs):
 * NULL pointers, a destroyed layer, an unknown bdev, a bad transport ID, memory not
 * from nvme_dma_alloc(). Each must return its negative errno with a message; the
 * program prints one line per check and exits 0 when all held.
 * (I/O refusals need a device: tests/abi.rs checks them over software controllers.)
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "nvmebdev.h"

static int failures;

static void expect(const char *what, int rc, int errno_want, const char *needle)
{
	const char *msg = nvme_last_error();
	int ok = rc == -errno_want && strstr(msg, needle) != NULL &&
		 strstr(nvme_strerror(rc), "unknown") == NULL;
	printf("%s %s: rc %d, \"%s\"\n", ok ? "ok" : "FAILED", what, rc, msg);
	failures += !ok;
}

int main(void)
{
	struct nvme_layer *layer = NULL;
	struct nvme_bdev *bdev = NULL;
	struct nvme_layer_opts opts;
	void *buf = NULL;
	char stack[64];

	expect("create with NULL out", nvme_layer_create(NULL, NULL), EINVAL, "layer is NULL");
	nvme_layer_opts_init(&opts);
	opts.policy = 7;
	expect("create with a bad policy", nvme_layer_create(&opts, &layer), EINVAL, "policy 7");
	if (nvme_layer_create(NULL, &layer) != 0) {
		printf("FAILED nvme_layer_create: %s\n", nvme_last_error());
		return 1;
	}
	expect("attach with a bad trid",
	       nvme_layer_attach(layer, "Nvme0", "trtype:RDMA traddr:0000:01:00.0"), EINVAL,
	       "trtype 'RDMA'");
	expect("attach with NULL name", nvme_layer_attach(layer, NULL, "traddr:01:00.0"), EINVAL,
	       "name is NULL");
	expect("open an unknown bdev", nvme_bdev_open(layer, "Nvme9n1", NULL, NULL, &bdev), ENODEV,
	       "Nvme9n1");
	expect("channel of a NULL bdev", nvme_channel_open(NULL, NULL), EINVAL, "bdev is NULL");
	expect("read on a NULL channel", nvme_bdev_read(NULL, stack, 0, 512, NULL, NULL), EINVAL,
	       "NULL");
	expect("poll a NULL channel", nvme_channel_poll(NULL), EINVAL, "NULL");
	expect("free stack memory", nvme_dma_free(layer, stack), EINVAL,
	       "not the start of a buffer");
	expect("alloc 0 bytes", nvme_dma_alloc(layer, 0, &buf), EINVAL, "size is 0");
	if (nvme_dma_alloc(layer, 4096, &buf) != 0 || nvme_dma_free(layer, buf) != 0) {
		printf("FAILED nvme_dma_alloc/free: %s\n", nvme_last_error());
		failures++;
	}
	expect("free twice", nvme_dma_free(layer, buf), EINVAL, "freed already");
	if (nvme_layer_destroy(layer) != 0) {
		printf("FAILED nvme_layer_destroy: %s\n", nvme_last_error());
		failures++;
	}
	expect("destroy twice", nvme_layer_destroy(layer), EBADF, "closed already");
	expect("alloc on a destroyed layer", nvme_dma_alloc(layer, 4096, &buf), EBADF,
	       "closed already");
	printf("%d failed\n", failures);
	return failures != 0;
}
