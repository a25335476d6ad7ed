#include "generate_chunked.h"

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>

#include "cm/error.h"
#include "cm/image_io.h"
#include "common.h"

namespace cm::cli {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Rank 0's end of the run: appends each chunk to the output file (opened when the first chunk
// tells the image size) or writes its PNGs.
class ChunkWriter {
 public:
  ChunkWriter(const ChunkedOutput& out, int64_t num_images) : out_(out), n_(num_images) {}

  void operator()(const SampleChunk& c) {
    const auto& images = c.images;
    if (ends_with(out_.path, ".png")) {
      const int64_t h = images.size(1), w = images.size(2), ch = images.size(3);
      const auto* pixels = images.data_ptr<uint8_t>();
      for (int64_t j = 0; j < images.size(0); ++j) {
        throw_if_interrupted();
        ImageU8 png{static_cast<int>(w), static_cast<int>(h), static_cast<int>(ch), {}};
        png.pixels.assign(pixels + j * h * w * ch, pixels + (j + 1) * h * w * ch);
        std::optional<int64_t> label;
        if (!c.class_labels.empty()) label = c.class_labels[j];
        const std::string path =
            output_name(out_.path, static_cast<int>(c.first + j), static_cast<int>(n_));
        write_png(path, png, {{"parameters", out_.png_text(c.seed, images, label)}});
        std::cout << path << std::endl;
      }
      return;
    }
    const std::vector<int64_t> shape{n_, images.size(1), images.size(2), images.size(3)};
    if (ends_with(out_.path, ".npy")) {
      if (!npy_) npy_ = std::make_unique<NpyStreamWriter>(out_.path, NpySpec{"<f4", shape});
      npy_->append(images.data_ptr(), images.nbytes());
      return;
    }
    if (!npz_) {
      std::vector<std::pair<std::string, NpySpec>> arrays{{"arr_0", {"|u1", shape}}};
      if (!c.class_labels.empty()) arrays.push_back({"arr_1", {"<i8", {n_}}});
      npz_ = std::make_unique<NpzStreamWriter>(out_.path, arrays);
    }
    npz_->append(0, images.data_ptr(), images.nbytes());
    if (!c.class_labels.empty())
      npz_->append(1, c.class_labels.data(), c.class_labels.size() * sizeof(int64_t));
  }

  void finish() {
    if (npy_) npy_->finish();
    if (npz_) npz_->finish();
    if (npy_ || npz_) std::cout << out_.path << std::endl;
  }

 private:
  const ChunkedOutput& out_;
  int64_t n_;
  std::unique_ptr<NpzStreamWriter> npz_;
  std::unique_ptr<NpyStreamWriter> npy_;
};

}  // namespace

int run_generate_chunked(ConsistencyModelPipeline& pipeline, const SamplingOptions& options,
                         const ChunkedOutput& output) {
  SamplingOptions o = options;
  o.float_images = ends_with(output.path, ".npy");
  ChunkWriter writer(output, o.num_images);
  const int64_t chunks = chunk_count(o.num_images, o.chunk_size);
  auto last = std::chrono::steady_clock::now();
  generate_chunks(pipeline, o, [&](const SampleChunk& c) {
    writer(c);
    const auto now = std::chrono::steady_clock::now();
    char line[160];
    std::snprintf(
        line, sizeof line, "chunk %lld/%lld  images %lld-%lld  seed %llu  rank %d  %.3f s",
        static_cast<long long>(c.index + 1), static_cast<long long>(chunks),
        static_cast<long long>(c.first), static_cast<long long>(c.first + c.images.size(0) - 1),
        static_cast<unsigned long long>(c.seed), c.rank,
        std::chrono::duration<double>(now - last).count());
    last = now;
    log(output.quiet, line);
  });
  writer.finish();
  return 0;
}

}  // namespace cm::cli
