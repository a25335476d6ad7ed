#include "golden.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "cm/config.h"
#include "io/state_dict.h"

namespace cm::test {

namespace fs = std::filesystem;

std::string golden_root() {
  if (const char* env = std::getenv("CM_GOLDEN_DIR")) return env;
  return CM_GOLDEN_DIR;
}

std::vector<std::string> golden_names() {
  std::vector<std::string> names;
  if (fs::is_directory(golden_root())) {
    for (const auto& e : fs::directory_iterator(golden_root())) {
      if (fs::exists(e.path() / "cases.json")) names.push_back(e.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  EXPECT_FALSE(names.empty()) << "no golden folders under " << golden_root();
  return names;
}

const at::Tensor& Golden::tensor(const std::string& key) const {
  auto it = tensors.find(key);
  if (it == tensors.end()) throw std::runtime_error(name + ": golden tensor '" + key + "' missing");
  return it->second;
}

const Golden& golden(const std::string& name) {
  static std::map<std::string, Golden> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  const fs::path dir = fs::path(golden_root()) / name;
  Golden g;
  g.name = name;
  g.cases = nlohmann::json::parse(read_text_file((dir / "cases.json").string()));
  g.model_dir = (dir / g.cases.value("model", std::string("model"))).string();
  g.tensors = read_state_dict((dir / "cases.safetensors").string());
  return cache.emplace(name, std::move(g)).first->second;
}

::testing::AssertionResult close_scaled(const at::Tensor& actual, const at::Tensor& expected,
                                        double atol) {
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure()
           << "shape " << actual.sizes() << " != expected " << expected.sizes();
  }
  const auto a = actual.to(at::kCPU, at::kDouble);
  const auto e = expected.to(at::kCPU, at::kDouble);
  const double scale = std::max(1.0, e.abs().max().item<double>());
  const double err = (a - e).abs().max().item<double>();
  if (err <= atol * scale) return ::testing::AssertionSuccess() << "max error " << err;
  return ::testing::AssertionFailure()
         << "max abs error " << err << " > " << atol * scale << " (magnitude " << scale << ")";
}

::testing::AssertionResult uint8_match(const at::Tensor& actual_u8, const at::Tensor& expected_u8,
                                       const at::Tensor& expected_float) {
  if (actual_u8.sizes() != expected_u8.sizes())
    return ::testing::AssertionFailure() << "shape " << actual_u8.sizes() << " != "
                                         << expected_u8.sizes();
  const auto differ = actual_u8.to(at::kInt) != expected_u8.to(at::kInt);
  const auto scaled = expected_float.to(at::kDouble) * 255;
  const auto near_boundary = (scaled - scaled.floor() - 0.5).abs() < 1e-3 * 255;
  const int64_t bad = (differ & ~near_boundary).sum().item<int64_t>();
  const int64_t total = differ.sum().item<int64_t>();
  if (bad == 0) return ::testing::AssertionSuccess() << total << " values differ at boundaries";
  return ::testing::AssertionFailure() << bad << " uint8 values differ away from a rounding boundary";
}

GenerateOptions golden_call(const nlohmann::json& c) {
  GenerateOptions o;
  o.batch_size = c["batch_size"];
  if (c.contains("timesteps")) o.timesteps = c["timesteps"].get<std::vector<int64_t>>();
  if (c.contains("num_inference_steps")) o.num_inference_steps = c["num_inference_steps"];
  if (c.contains("seed")) o.seed = c["seed"];
  if (c.contains("class_labels") && !c["class_labels"].is_null())
    o.class_labels = c["class_labels"].get<std::vector<int64_t>>();
  return o;
}

}  // namespace cm::test
