// Generates with an installed consistency.cpp and compares the images with a reference that the
// installed cm wrote for the same arguments:  downstream MODEL_DIR REFERENCE.npy
#include <cm/image_io.h>
#include <cm/output.h>
#include <cm/pipeline.h>
#include <cm/version.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: downstream MODEL_DIR REFERENCE.npy\n");
    return 2;
  }
  try {
    auto pipe = cm::ConsistencyModelPipeline::from_pretrained(argv[1]);
    cm::GenerateOptions o;
    o.batch_size = 2;
    o.class_labels = {3};
    o.seed = 7;
    const cm::NpyArray ours = cm::images_to_npy(pipe(o).images);
    const cm::NpyArray ref = cm::read_npy(argv[2]);
    if (ours.shape != ref.shape || ours.descr != ref.descr || ours.data.size() != ref.data.size()) {
      std::fprintf(stderr, "downstream: shape or type differs from %s\n", argv[2]);
      return 1;
    }
    // float32 images in [0, 1]: the same library, so the same numbers up to rounding.
    const float* a = reinterpret_cast<const float*>(ours.data.data());
    const float* b = reinterpret_cast<const float*>(ref.data.data());
    double worst = 0;
    for (size_t i = 0; i < ours.data.size() / sizeof(float); ++i)
      worst = std::fmax(worst, std::fabs(double(a[i]) - double(b[i])));
    std::printf("consistency.cpp %s: %zu values, largest difference from cm generate %.3g\n",
                CM_VERSION, ours.data.size() / sizeof(float), worst);
    return worst <= 1e-5 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "downstream: %s\n", e.what());
    return 1;
  }
}
