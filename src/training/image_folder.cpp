#include "training/image_folder.h"

#include <ATen/ATen.h>
#include <algorithm>
#include <cctype>
#include <filesystem>

#include "cm/error.h"
#include "cm/image_io.h"

namespace cm::training {

namespace fs = std::filesystem;

namespace {

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

// Sorted so that labels and image order do not depend on the file system's listing order.
std::vector<fs::path> sorted_entries(const fs::path& dir, bool directories) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (directories ? e.is_directory() : (e.is_regular_file() && is_image_name(e.path())))
      out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

Dataset load_image_folder(const std::string& dir, int size, int channels, int64_t limit) {
  if (!fs::is_directory(dir)) throw Error("--data: '" + dir + "' is not a folder");
  if (channels != 1 && channels != 3)
    throw Error("--data: '" + dir + "': images can be read as 1 or 3 channels, not " +
                std::to_string(channels));
  Dataset ds;
  std::vector<std::pair<fs::path, int64_t>> files;  // (file, label)
  const auto classes = sorted_entries(dir, /*directories=*/true);
  if (classes.empty()) {
    for (const auto& f : sorted_entries(dir, false)) files.emplace_back(f, 0);
  } else {
    for (size_t c = 0; c < classes.size(); ++c) {
      ds.class_names.push_back(classes[c].filename().string());
      for (const auto& f : sorted_entries(classes[c], false))
        files.emplace_back(f, static_cast<int64_t>(c));
    }
  }
  const size_t pixels = static_cast<size_t>(size) * size * channels;
  std::vector<uint8_t> bytes;
  std::vector<int64_t> labels;
  for (const auto& [file, label] : files) {
    if (limit > 0 && static_cast<int64_t>(labels.size()) >= limit) break;
    try {
      const ImageU8 img = resize_image(convert_channels(read_image(file.string()), channels), size, size);
      bytes.insert(bytes.end(), img.pixels.begin(), img.pixels.begin() + pixels);
      labels.push_back(label);
    } catch (const std::exception& e) {
      ds.skipped.push_back(e.what());
    }
  }
  if (labels.empty())
    throw Error("--data: '" + dir + "' holds no readable PNG or JPEG image" +
                (ds.skipped.empty() ? "" : " (" + std::to_string(ds.skipped.size()) +
                                               " unreadable: " + ds.skipped.front() + ")"));
  const int64_t n = static_cast<int64_t>(labels.size());
  ds.images = at::from_blob(bytes.data(), {n, size, size, channels}, at::kByte)
                  .permute({0, 3, 1, 2})
                  .to(at::kFloat)
                  .contiguous()
                  .div_(127.5)
                  .sub_(1.0);
  ds.labels = at::tensor(labels, at::kLong);
  return ds;
}

}  // namespace cm::training
