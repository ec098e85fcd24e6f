// SPDX-License-Identifier: Apache-2.0 OR MIT
// The header from C++: it only has to compile and link (the test suite builds it with
// c++ against libnvmebdev.a). A small RAII owner of a layer, and a bdev list.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "nvmebdev.h"

namespace {

struct LayerDeleter {
	void operator()(nvme_layer *l) const { nvme_layer_destroy(l); }
};
using Layer = std::unique_ptr<nvme_layer, LayerDeleter>;

std::vector<std::string> bdev_names(nvme_layer *layer)
{
	std::vector<std::string> names;
	char name[NVME_BDEV_NAME_MAX];
	for (size_t i = 0; nvme_layer_bdev_name(layer, i, name, sizeof(name)) == 0; i++)
		names.emplace_back(name);
	return names;
}

} // namespace

int main(int argc, char **argv)
{
	nvme_layer_opts opts;
	nvme_layer_opts_init(&opts);
	opts.policy = NVME_POLICY_ROUND_ROBIN;
	nvme_layer *raw = nullptr;
	if (int rc = nvme_layer_create(&opts, &raw); rc < 0) {
		std::fprintf(stderr, "nvme_layer_create: %s\n", nvme_last_error());
		return 1;
	}
	Layer layer(raw);
	for (int i = 1; i < argc; i++) {
		std::string name = "Nvme" + std::to_string(i - 1);
		if (nvme_layer_attach(layer.get(), name.c_str(), argv[i]) < 0)
			std::fprintf(stderr, "%s: %s\n", argv[i], nvme_last_error());
	}
	for (const auto &n : bdev_names(layer.get()))
		std::printf("%s\n", n.c_str());
	return 0;
}
