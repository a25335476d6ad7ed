// cm generate for many images (more than --chunk-size, or under torchrun): chunks computed by
// every process and written by rank 0 as they arrive, to one .npz or .npy or numbered PNGs.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "cm/sampling.h"

namespace cm::cli {

struct ChunkedOutput {
  std::string path;  // .npz, .npy or .png (a pattern for output_name)
  bool quiet = false;
  // The "parameters" text of a PNG from its chunk's seed, images and its label.
  std::function<std::string(uint64_t seed, const at::Tensor& images, std::optional<int64_t> label)>
      png_text;
};

int run_generate_chunked(ConsistencyModelPipeline& pipeline, const SamplingOptions& options,
                         const ChunkedOutput& output);

}  // namespace cm::cli
