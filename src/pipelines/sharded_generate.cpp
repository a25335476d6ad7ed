// Chunked, multi-process sampling (include/cm/sampling.h). On the wire a chunk is three messages
// from its rank to rank 0: a header {k, B, H, W, C, labels}, the images, the labels.
#include "cm/sampling.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <climits>

#include "cm/error.h"
#include "cm/output.h"
#include "runtime/distributed.h"

namespace cm {

int64_t chunk_count(int64_t num_images, int64_t chunk_size) {
  return (num_images + chunk_size - 1) / chunk_size;
}

int64_t chunk_images(int64_t num_images, int64_t chunk_size, int64_t k) {
  return std::min(chunk_size, num_images - k * chunk_size);
}

namespace {


constexpr int kHeaderLength = 6;

int message_tag(int64_t k, int part) {
  return static_cast<int>(k * 3 + part);
}

void check_options(const SamplingOptions& o) {
  if (o.num_images < 1)
    throw Error("number of images: must be at least 1, got " + std::to_string(o.num_images));
  if (o.chunk_size < 1)
    throw Error("chunk size: must be at least 1, got " + std::to_string(o.chunk_size));
  if (chunk_count(o.num_images, o.chunk_size) > INT_MAX / 3)
    throw Error("chunk size: " + std::to_string(o.chunk_size) + " makes too many chunks");
  const size_t labels = o.generate.class_labels.size();
  if (labels > 1 && static_cast<int64_t>(labels) != o.num_images)
    throw Error("class labels: " + std::to_string(labels) + " given for " +
                std::to_string(o.num_images) + " images (give one, or one per image)");
}

// Every rank must cut the same chunks; the seed is rank 0's (a random one differs per process).
void agree_with_rank0(ProcessGroup& group, SamplingOptions& o) {
  const auto mine = at::tensor(
      {o.num_images, o.chunk_size, static_cast<int64_t>(o.generate.seed),
       static_cast<int64_t>(o.float_images), static_cast<int64_t>(o.generate.class_labels.size())},
      at::kLong);
  const auto rank0 = mine.clone();
  group.broadcast({rank0});
  const int64_t* a = mine.data_ptr<int64_t>();
  const int64_t* b = rank0.data_ptr<int64_t>();
  if (a[0] != b[0] || a[1] != b[1] || a[3] != b[3] || a[4] != b[4])
    throw Error("this rank's images (" + std::to_string(a[0]) + "), chunk size (" +
                std::to_string(a[1]) + "), output type or class labels differ from rank 0's (" +
                std::to_string(b[0]) + ", " + std::to_string(b[1]) + ")");
  o.generate.seed = static_cast<uint64_t>(b[2]);
}

SampleChunk compute_chunk(ConsistencyModelPipeline& pipeline, const SamplingOptions& o, int64_t k,
                          int rank) {
  SampleChunk chunk;
  chunk.index = k;
  chunk.first = k * o.chunk_size;
  chunk.seed = o.generate.seed + static_cast<uint64_t>(k);
  chunk.rank = rank;
  GenerateOptions g = o.generate;
  g.batch_size = static_cast<int>(chunk_images(o.num_images, o.chunk_size, k));
  g.seed = chunk.seed;
  g.latents.reset();
  if (g.class_labels.size() > 1)
    g.class_labels.assign(o.generate.class_labels.begin() + chunk.first,
                          o.generate.class_labels.begin() + chunk.first + g.batch_size);
  GenerateResult r = pipeline(g);
  chunk.images = o.float_images ? r.images : images_to_uint8(r.images);
  chunk.class_labels = std::move(r.class_labels);
  return chunk;
}

SampleChunk receive_chunk(ProcessGroup& group, const SamplingOptions& o, int64_t k, int src) {
  const auto header = at::empty({kHeaderLength}, at::kLong);
  group.recv(header, src, message_tag(k, 0));
  const int64_t* h = header.data_ptr<int64_t>();
  const int64_t b = chunk_images(o.num_images, o.chunk_size, k);
  if (h[0] != k || h[1] != b || h[2] < 1 || h[3] < 1 || h[4] < 1 || (h[5] != 0 && h[5] != b))
    throw Error("rank " + std::to_string(src) + " sent chunk " + std::to_string(h[0]) + " of " +
                std::to_string(h[1]) + " images where chunk " + std::to_string(k) + " of " +
                std::to_string(b) + " was due");
  SampleChunk chunk;
  chunk.index = k;
  chunk.first = k * o.chunk_size;
  chunk.seed = o.generate.seed + static_cast<uint64_t>(k);
  chunk.rank = src;
  chunk.images = at::empty({h[1], h[2], h[3], h[4]}, o.float_images ? at::kFloat : at::kByte);
  group.recv(chunk.images, src, message_tag(k, 1));
  if (h[5] > 0) {
    const auto labels = at::empty({h[5]}, at::kLong);
    group.recv(labels, src, message_tag(k, 2));
    chunk.class_labels.assign(labels.data_ptr<int64_t>(), labels.data_ptr<int64_t>() + h[5]);
  }
  return chunk;
}

// Starts the messages of a chunk to rank 0; the tensors live in the returned sends.
std::vector<ProcessGroup::PendingSend> send_chunk(ProcessGroup& group, const SampleChunk& c) {
  const auto header = at::tensor({c.index, c.images.size(0), c.images.size(1), c.images.size(2),
                                  c.images.size(3), static_cast<int64_t>(c.class_labels.size())},
                                 at::kLong);
  std::vector<ProcessGroup::PendingSend> sends;
  sends.push_back(group.send(header, 0, message_tag(c.index, 0)));
  sends.push_back(group.send(c.images, 0, message_tag(c.index, 1)));
  if (!c.class_labels.empty())
    sends.push_back(group.send(at::tensor(c.class_labels, at::kLong), 0, message_tag(c.index, 2)));
  return sends;
}

void run(ProcessGroup& group, ConsistencyModelPipeline& pipeline, SamplingOptions& o,
         const ChunkSink& sink) {
  if (group.world_size() > 1) agree_with_rank0(group, o);
  const int64_t chunks = chunk_count(o.num_images, o.chunk_size);
  const int rank = group.rank(), world = group.world_size();
  if (rank == 0) {
    for (int64_t k = 0; k < chunks; ++k) {
      const int src = static_cast<int>(k % world);
      sink(src == 0 ? compute_chunk(pipeline, o, k, 0) : receive_chunk(group, o, k, src));
    }
    return;
  }
  // The next chunk is computed while the previous one is on its way: at most two in memory.
  std::vector<ProcessGroup::PendingSend> in_flight;
  for (int64_t k = rank; k < chunks; k += world) {
    const SampleChunk chunk = compute_chunk(pipeline, o, k, rank);
    for (auto& s : in_flight) s.wait();
    in_flight = send_chunk(group, chunk);
  }
  for (auto& s : in_flight) s.wait();
}

}  // namespace

void generate_chunks(ConsistencyModelPipeline& pipeline, const SamplingOptions& options,
                     const ChunkSink& sink) {
  check_options(options);
  // Joining first means a rank that fails later (a bad label, a full disk) is noticed by the
  // others at once, through the closed connection, instead of after the rendezvous timeout.
  ProcessGroup group(options.distributed);
  SamplingOptions o = options;
  try {
    run(group, pipeline, o, sink);
  } catch (const Error& e) {
    if (group.rank() == 0) throw;
    throw Error("rank " + std::to_string(group.rank()) + " of " +
                std::to_string(group.world_size()) + ": " + e.what());
  }
}

}  // namespace cm
