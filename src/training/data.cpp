#include "training/data.h"

#include <ATen/ATen.h>
#include <zlib.h>

#include "cm/error.h"
#include "training/image_folder.h"

namespace cm::training {

const std::vector<std::string> kFashionMnistClasses = {
    "tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"};

namespace {

// Reads a whole gzip (or plain) file; IDX files are a few MB.
std::vector<uint8_t> read_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw Error(path + ": cannot open (install the dataset-fashion-mnist package)");
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  int n = 0;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + n);
  const bool failed = n < 0;
  gzclose(f);
  if (failed) throw Error(path + ": corrupt gzip data");
  return out;
}

uint32_t be32(const std::vector<uint8_t>& d, size_t off) {
  return (uint32_t(d[off]) << 24) | (uint32_t(d[off + 1]) << 16) | (uint32_t(d[off + 2]) << 8) |
         uint32_t(d[off + 3]);
}

// IDX: magic 0x0000 08 <ndim>, then ndim big-endian sizes, then unsigned bytes.
std::vector<int64_t> idx_shape(const std::vector<uint8_t>& d, const std::string& path,
                               size_t ndim) {
  if (d.size() < 4 + 4 * ndim || d[0] != 0 || d[1] != 0 || d[2] != 0x08 || d[3] != ndim)
    throw Error(path + ": not an IDX file of unsigned bytes with " + std::to_string(ndim) +
                " dimensions");
  std::vector<int64_t> shape;
  size_t count = 1;
  for (size_t i = 0; i < ndim; ++i) {
    shape.push_back(be32(d, 4 + 4 * i));
    count *= static_cast<size_t>(shape.back());
  }
  if (d.size() != 4 + 4 * ndim + count) throw Error(path + ": size does not match its header");
  return shape;
}

}  // namespace

Dataset load_fashion_mnist(const std::string& dir, const std::string& split, int64_t limit) {
  if (split != "train" && split != "test")
    throw Error("fashion-mnist: unknown split '" + split + "' (train, test)");
  const std::string prefix = dir + "/" + (split == "train" ? "train" : "t10k");
  const std::string images_path = prefix + "-images-idx3-ubyte.gz";
  const std::string labels_path = prefix + "-labels-idx1-ubyte.gz";
  const auto images = read_gz(images_path);
  const auto labels = read_gz(labels_path);
  auto ishape = idx_shape(images, images_path, 3);
  auto lshape = idx_shape(labels, labels_path, 1);
  if (ishape[0] != lshape[0]) throw Error(labels_path + ": label count differs from image count");
  int64_t n = ishape[0];
  if (limit > 0) n = std::min(n, limit);
  Dataset ds;
  ds.images = at::from_blob(const_cast<uint8_t*>(images.data() + 16), {n, 1, ishape[1], ishape[2]},
                            at::kByte)
                  .to(at::kFloat)
                  .div_(127.5)
                  .sub_(1.0);
  ds.labels = at::from_blob(const_cast<uint8_t*>(labels.data() + 8), {n}, at::kByte).to(at::kLong);
  ds.class_names = kFashionMnistClasses;
  return ds;
}

Dataset load_dataset(const std::string& spec, int64_t limit, int size, int channels) {
  if (spec == "fashion-mnist" || spec == "fashion-mnist:train")
    return load_fashion_mnist(kFashionMnistDir, "train", limit);
  if (spec == "fashion-mnist:test") return load_fashion_mnist(kFashionMnistDir, "test", limit);
  if (spec.rfind("fashion-mnist", 0) == 0)
    throw Error("--data: unknown split in '" + spec + "' (fashion-mnist, fashion-mnist:test)");
  return load_image_folder(spec, size, channels, limit);
}

}  // namespace cm::training
