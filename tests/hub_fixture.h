// What the Hub tests share: the repositories the fake Hub serves, a per-test cache and
// environment, and small helpers.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cm/hub.h"
#include "fake_hub_process.h"
#include "golden.h"

namespace cm::test {

extern const char* const kGoldenModel;  // the golden tiny_cond pipeline folder
extern const char* const kWeights;      // "unet/diffusion_pytorch_model.safetensors"

std::string golden_file(const std::string& path);  // kGoldenModel + "/" + path
std::filesystem::path suite_dir();                 // this process's scratch folder
std::string read_bytes(const std::filesystem::path& p);
void write_bytes(const std::filesystem::path& p, const std::string& data);

// Folders served as repositories, made once from the golden model.
struct Repos {
  std::string plain;     // the golden model itself
  std::string variants;  // plus unet/diffusion_pytorch_model.fp16.safetensors
  std::string sharded;   // the UNet in two shards and an index, no single file
};
const Repos& repos();

// diffusers' pipeline.0 case of tiny_cond (seed 0, one step, class 3) and its expected images.
at::Tensor images_of(const std::string& folder, const std::string& variant = "");
const at::Tensor& golden_images();

// The message of the cm::Error `f` throws ("(no error)" when it throws none).
std::string error_of(const std::function<void()>& f);
void expect_one_line_mentioning(const std::string& msg, const std::vector<std::string>& words);

class HubTest : public ::testing::Test {
 protected:
  // Each test gets its own cache (HF_HUB_CACHE) and HF_HOME; no Hugging Face variable of the
  // machine leaks in.
  void SetUp() override;
  void TearDown() override;

  std::string cache() const { return (dir_ / "cache").string(); }
  std::filesystem::path repo_root(const std::string& folder = "models--org--tiny") const {
    return std::filesystem::path(cache()) / folder;
  }
  // Starts (or restarts) the fake Hub; no flags serve the golden model as org/tiny.
  FakeHubProcess& start(std::vector<std::string> args = {});
  // The fake Hub's endpoint (a closed port when none runs) and short back-offs.
  HubOptions options() const;
  // Requests the fake Hub saw whose path contains `part`.
  std::vector<nlohmann::json> requests(const std::string& part = "") const;

  std::filesystem::path dir_;
  std::unique_ptr<FakeHubProcess> hub_;
};

}  // namespace cm::test
