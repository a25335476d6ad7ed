// Sampling at scale: N images cut into fixed chunks, shared among torchrun-style processes, and
// handed to rank 0 in order, one chunk at a time, so memory stays bounded whatever N is.
//
// How the noise is drawn: chunk k holds images [k*C, min((k+1)*C, N)) and is exactly one pipeline
// call with that batch size and seed S + k (diffusers' torch.Generator().manual_seed(S + k)).
// Random class labels follow the chunk's seed as the pipeline draws them; given labels are one
// for all images or one per image (sliced per chunk). So an image depends on N, C and S but never
// on the number of processes, and a run with N <= C is diffusers' single call with seed S.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "cm/pipeline.h"
#include "cm/distributed.h"

namespace cm {

struct SamplingOptions {
  int64_t num_images = 1;    // N
  int64_t chunk_size = 256;  // C
  // seed is S; class_labels are empty, one for all or one per image (N); batch_size and latents
  // are ignored (each chunk sets its own).
  GenerateOptions generate;
  // Rank r computes the chunks k with k % world_size == r; world_size 1 makes no connection.
  // Waits for another rank end with a cm::Error naming it after timeout_seconds.
  DistributedOptions distributed;
  bool float_images = false;  // chunks carry float32 in [0, 1] instead of uint8
};

struct SampleChunk {
  int64_t index = 0;  // k
  int64_t first = 0;  // global index of its first image, k * C
  uint64_t seed = 0;  // S + k
  int rank = 0;       // the process that computed it
  // [B, H, W, C] on the CPU: uint8, round(x * 255) as diffusers' numpy_to_pil rounds, or the
  // pipeline's float32 images when SamplingOptions::float_images.
  at::Tensor images;
  std::vector<int64_t> class_labels;  // B labels, or none for an unconditional model
};

// Receives the chunks on rank 0, in order k = 0, 1, 2, ...; never called on other ranks.
using ChunkSink = std::function<void(const SampleChunk&)>;

// Chunks in a run of num_images with chunk_size, and the images in chunk k.
int64_t chunk_count(int64_t num_images, int64_t chunk_size);
int64_t chunk_images(int64_t num_images, int64_t chunk_size, int64_t k);

// Runs on every rank of the job with the same options (rank 0's seed is used by all). Other ranks
// send their chunks to rank 0 over c10d; each process holds at most two chunks at a time.
// Throws cm::Error for invalid options, and on any rank when another fails or stops answering.
void generate_chunks(ConsistencyModelPipeline& pipeline, const SamplingOptions& options,
                     const ChunkSink& sink);

}  // namespace cm
