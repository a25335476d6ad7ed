#include "hub_fixture.h"

#include <unistd.h>
#include <fstream>

#include "cm/error.h"
#include "cm/pipeline.h"
#include "io/state_dict.h"

namespace cm::test {

namespace fs = std::filesystem;

const char* const kGoldenModel = CM_GOLDEN_DIR "/tiny_cond/model";
const char* const kWeights = "unet/diffusion_pytorch_model.safetensors";

std::string golden_file(const std::string& path) {
  return std::string(kGoldenModel) + "/" + path;
}

fs::path suite_dir() {
  static const fs::path dir =
      fs::temp_directory_path() / ("cm_hub_test_" + std::to_string(::getpid()));
  return dir;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const fs::path& p, const std::string& data) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << data;
}

namespace {

// The scratch folder (and the repositories made in it) goes when the tests end.
class RemoveSuiteDir : public ::testing::Environment {
 public:
  void TearDown() override { fs::remove_all(suite_dir()); }
};
const auto* const kRemoveSuiteDir = ::testing::AddGlobalTestEnvironment(new RemoveSuiteDir);

}  // namespace

const Repos& repos() {
  static const Repos r = [] {
    Repos out;
    out.plain = kGoldenModel;
    const std::string golden = kGoldenModel;
    const fs::path root = suite_dir() / "repos";
    const auto state = read_state_dict(golden + "/" + kWeights);

    out.variants = (root / "variants").string();
    fs::create_directories(out.variants);
    fs::copy(golden, out.variants, fs::copy_options::recursive);
    std::map<std::string, at::Tensor> half;
    for (const auto& [name, t] : state) half.emplace(name, t.to(at::kHalf));
    write_state_dict(out.variants + "/unet/diffusion_pytorch_model.fp16.safetensors", half);

    out.sharded = (root / "sharded").string();
    fs::create_directories(out.sharded + "/unet");
    fs::copy(golden + "/model_index.json", out.sharded);
    fs::copy(golden + "/scheduler", out.sharded + "/scheduler");
    fs::copy(golden + "/unet/config.json", out.sharded + "/unet");
    std::map<std::string, at::Tensor> shards[2];
    nlohmann::json index = {{"metadata", {{"total_size", 0}}},
                            {"weight_map", nlohmann::json::object()}};
    size_t i = 0;
    for (const auto& [name, t] : state) {
      const int k = i++ < state.size() / 2 ? 0 : 1;
      shards[k].emplace(name, t);
      index["weight_map"][name] =
          "diffusion_pytorch_model-0000" + std::to_string(k + 1) + "-of-00002.safetensors";
    }
    for (int k = 0; k < 2; ++k) {
      write_state_dict(out.sharded + "/unet/diffusion_pytorch_model-0000" + std::to_string(k + 1) +
                           "-of-00002.safetensors",
                       shards[k]);
    }
    write_bytes(out.sharded + "/unet/diffusion_pytorch_model.safetensors.index.json",
                index.dump(2));
    return out;
  }();
  return r;
}

at::Tensor images_of(const std::string& folder, const std::string& variant) {
  LoadOptions load;
  load.variant = variant;
  auto pipe = ConsistencyModelPipeline::from_pretrained(folder, load);
  GenerateOptions o;
  o.seed = 0;
  o.class_labels = {3};
  return pipe(o).images;
}

const at::Tensor& golden_images() {
  return golden("tiny_cond").tensor("pipeline.0.images");
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

void expect_one_line_mentioning(const std::string& msg, const std::vector<std::string>& words) {
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  for (const auto& w : words)
    EXPECT_NE(msg.find(w), std::string::npos) << "'" << w << "' in: " << msg;
}

void HubTest::SetUp() {
  dir_ = suite_dir() / ::testing::UnitTest::GetInstance()->current_test_info()->name();
  fs::remove_all(dir_);
  fs::create_directories(dir_);
  ::setenv("HF_HUB_CACHE", cache().c_str(), 1);
  ::setenv("HF_HOME", (dir_ / "hf_home").c_str(), 1);
  for (const char* name :
       {"HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT"})
    ::unsetenv(name);
  // The fake Hub is local: a proxy set for the machine must not be asked for it.
  ::setenv("no_proxy", "127.0.0.1,localhost", 1);
  ::setenv("NO_PROXY", "127.0.0.1,localhost", 1);
}

void HubTest::TearDown() {
  hub_.reset();
  fs::remove_all(dir_);
}

FakeHubProcess& HubTest::start(std::vector<std::string> args) {
  if (args.empty()) args = {"--repo", "org/tiny=" + repos().plain};
  hub_.reset();
  hub_ = std::make_unique<FakeHubProcess>(args, (dir_ / "requests.log").string());
  return *hub_;
}

HubOptions HubTest::options() const {
  HubOptions o;
  // A stopped fake Hub leaves its port closed: the network is "down".
  o.endpoint = hub_ ? hub_->endpoint() : "http://127.0.0.1:9";
  o.retry_delay_s = 0.01;  // the back-off is exercised, but kept short
  o.max_retries = 3;
  return o;
}

std::vector<nlohmann::json> HubTest::requests(const std::string& part) const {
  std::vector<nlohmann::json> out;
  for (const auto& r : hub_->requests()) {
    if (r["path"].get<std::string>().find(part) != std::string::npos) out.push_back(r);
  }
  return out;
}

}  // namespace cm::test
