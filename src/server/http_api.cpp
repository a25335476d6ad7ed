#include "server/http_api.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <limits>
#include <random>
#include <set>
#include <sstream>

#include "cm/config.h"
#include "cm/output.h"
#include "cm/version.h"

namespace cm::server {

using nlohmann::json;

namespace {

[[noreturn]] void refuse(const std::string& param, const std::string& message) {
  throw ApiError{400, param + ": " + message, param};
}

int64_t integer(const json& v, const std::string& param, int64_t lo, int64_t hi) {
  if (!v.is_number_integer())
    refuse(param, "must be an integer, got " + std::string(v.type_name()) + " " + v.dump());
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi))
    refuse(param, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                      ", got " + v.dump());
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    refuse(param, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                      ", got " + std::to_string(x));
  return x;
}

std::string text(const json& v, const std::string& param) {
  if (!v.is_string()) refuse(param, "must be a string, got " + std::string(v.type_name()));
  return v.get<std::string>();
}


}  // namespace

int64_t class_from_prompt(const std::string& prompt, const ModelInfo& model) {
  const int n = *model.num_classes;
  const bool digits =
      !prompt.empty() && prompt.size() <= 9 &&
      std::all_of(prompt.begin(), prompt.end(), [](unsigned char c) { return std::isdigit(c); });
  if (digits) {
    const int64_t c = std::stoll(prompt);
    if (c >= n)
      refuse("prompt", "class " + prompt + " is out of range [0, " + std::to_string(n) + ")");
    return c;
  }
  if (const auto c = find_class_name(model.class_names, prompt)) return *c;
  std::string shown = prompt.size() > 64 ? prompt.substr(0, 64) + "..." : prompt;
  refuse("prompt", "'" + shown +
                       "' is not a class of this model (a class name or a number in [0, " +
                       std::to_string(n) + "))");
}

ParsedGeneration parse_generation(const std::string& body, const ModelInfo& model, int max_n) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    throw ApiError{400, std::string("body: malformed JSON: ") + e.what(), "body"};
  }
  if (!j.is_object()) throw ApiError{400, "body: must be a JSON object", "body"};
  static const std::set<std::string> known = {
      "prompt", "n",     "response_format", "output_format", "size",         "model",
      "user",   "seed",  "steps",           "timesteps",     "class_labels", "stream"};
  for (const auto& item : j.items()) {
    if (!known.count(item.key()))
      refuse(item.key(),
             "unknown field (known: prompt, n, response_format, output_format, size, "
             "model, user, seed, steps, timesteps, class_labels, stream)");
  }
  ParsedGeneration out;
  if (j.contains("stream") && !j["stream"].is_null()) {
    if (!j["stream"].is_boolean()) refuse("stream", "must be true or false");
    out.stream = j["stream"].get<bool>();
  }
  ImageRequest& r = out.request;
  auto has = [&](const char* key) { return j.contains(key) && !j.at(key).is_null(); };
  if (has("n")) r.n = static_cast<int>(integer(j["n"], "n", 1, max_n));
  if (has("response_format") && text(j["response_format"], "response_format") != "b64_json")
    refuse("response_format",
           "only b64_json is supported, got '" + j["response_format"].get<std::string>() + "'");
  if (has("output_format") && text(j["output_format"], "output_format") != "png")
    refuse("output_format",
           "only png is supported, got '" + j["output_format"].get<std::string>() + "'");
  const std::string size =
      std::to_string(model.sample_size) + "x" + std::to_string(model.sample_size);
  if (has("size") && text(j["size"], "size") != size)
    refuse("size",
           "this model makes " + size + " images, got '" + j["size"].get<std::string>() + "'");
  if (has("model") && text(j["model"], "model") != model.id)
    refuse("model", "'" + j["model"].get<std::string>() + "' is not served here (serving '" +
                        model.id + "')");
  if (has("user")) text(j["user"], "user");

  if (has("seed")) {
    r.seed =
        static_cast<uint64_t>(integer(j["seed"], "seed", 0, std::numeric_limits<int64_t>::max()));
  } else {
    r.seed = std::random_device{}() & 0x7fffffffu;  // as cm generate picks one
  }
  if (has("steps") && has("timesteps")) refuse("timesteps", "give either steps or timesteps");
  if (has("steps"))
    r.num_inference_steps =
        static_cast<int>(integer(j["steps"], "steps", 1, model.num_train_timesteps));
  if (has("timesteps")) {
    const json& t = j["timesteps"];
    if (!t.is_array() || t.empty()) refuse("timesteps", "must be a non-empty array of integers");
    for (const auto& v : t) {
      r.timesteps.push_back(integer(v, "timesteps", 0, model.num_train_timesteps - 1));
      if (r.timesteps.size() > 1 && r.timesteps.back() >= r.timesteps[r.timesteps.size() - 2])
        refuse("timesteps", "must be strictly descending, got " + t.dump());
    }
  }

  const std::string prompt = has("prompt") ? text(j["prompt"], "prompt") : "";
  if (!model.num_classes) {
    if (!prompt.empty()) refuse("prompt", "the model is unconditional: leave it empty");
    if (has("class_labels")) refuse("class_labels", "the model is not class-conditional");
    return out;
  }
  if (has("class_labels")) {
    if (!prompt.empty()) refuse("class_labels", "give either a prompt or class_labels");
    json labels = j["class_labels"];
    if (labels.is_number()) labels = json::array({labels});
    if (!labels.is_array() || labels.empty())
      refuse("class_labels", "must be an integer or a non-empty array of integers");
    if (labels.size() != 1 && static_cast<int>(labels.size()) != r.n)
      refuse("class_labels", std::to_string(labels.size()) + " given for n = " +
                                 std::to_string(r.n) + " (give one, or one per image)");
    for (const auto& v : labels)
      r.class_labels.push_back(integer(v, "class_labels", 0, *model.num_classes - 1));
  } else if (!prompt.empty()) {
    r.class_labels = {class_from_prompt(prompt, model)};
  }
  return out;
}

json error_json(const ApiError& e) {
  const char* type = e.status == 401   ? "authentication_error"
                     : e.status == 429 ? "rate_limit_error"
                     : e.status >= 500 ? "server_error"
                                       : "invalid_request_error";
  return {{"error",
           {{"message", e.message},
            {"type", type},
            {"param", e.param.empty() ? json(nullptr) : json(e.param)},
            {"code", nullptr}}}};
}

std::string base64_encode(const std::vector<uint8_t>& bytes) {
  static const char* digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    for (int s = 18; s >= 0; s -= 6) out += digits[(v >> s) & 63];
  }
  if (i < bytes.size()) {
    uint32_t v = bytes[i] << 16;
    if (i + 1 < bytes.size()) v |= bytes[i + 1] << 8;
    out += digits[(v >> 18) & 63];
    out += digits[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? digits[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

namespace {

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

}  // namespace

// cm generate's `parameters` text (tools/cm/generate.cpp), stable-diffusion.cpp's key: value style;
// an edit's starts with its task, as cm edit's does.
std::string parameters_text(const ImageRequest& r, const ModelInfo& m,
                            std::optional<int64_t> label) {
  std::ostringstream ss;
  if (r.edit) ss << "task: " << edit_task_name(r.edit->task) << ", ";
  ss << "model: " << m.id << ", seed: " << r.seed;
  if (!r.timesteps.empty()) {
    ss << ", timesteps: " << join(r.timesteps);
  } else if (!r.edit || r.num_inference_steps > 0) {
    ss << ", steps: " << r.num_inference_steps;
  }
  if (label) ss << ", class: " << *label;
  ss << ", dtype: " << m.dtype;
  if (m.winograd) ss << ", convolution: winograd";
  ss << ", scheduler: CMStochasticIterativeScheduler"
     << ", size: " << m.sample_size << "x" << m.sample_size << ", generator: cm " << CM_VERSION;
  return ss.str();
}

std::vector<std::vector<uint8_t>> encode_images(const ImageRequest& r, const GenerateResult& result,
                                                const ModelInfo& m) {
  const auto images = to_uint8_images(result.images);
  std::vector<std::vector<uint8_t>> out;
  for (size_t i = 0; i < images.size(); ++i) {
    std::optional<int64_t> label;
    if (!result.class_labels.empty()) label = result.class_labels[i];
    out.push_back(encode_png(images[i], {{"parameters", parameters_text(r, m, label)}}));
  }
  return out;
}

json images_json(const ImageRequest& r, const GenerateResult& result, const ModelInfo& m) {
  json data = json::array();
  const auto pngs = encode_images(r, result, m);
  for (size_t i = 0; i < pngs.size(); ++i) {
    json item = {{"b64_json", base64_encode(pngs[i])}, {"seed", r.seed}};
    if (!result.class_labels.empty()) item["class_label"] = result.class_labels[i];
    data.push_back(std::move(item));
  }
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return {{"created", std::chrono::duration_cast<std::chrono::seconds>(now).count()},
          {"data", std::move(data)}};
}

json job_json(const JobStatus& s, const ModelInfo& m) {
  const ImageRequest& r = s.request;
  json j = {{"id", job_name(s.id)},
            {"object", "image.job"},
            {"status", job_state_name(s.state)},
            {"step", s.step},
            {"steps", s.num_steps},
            {"seed", r.seed},
            {"n", r.n}};
  if (s.state == JobState::kQueued) j["position"] = s.position;
  if (s.state == JobState::kFailed) j["error"] = s.error;
  if (s.state == JobState::kDone) {
    const json images = images_json(r, s.result, m);
    j["created"] = images["created"];
    j["data"] = images["data"];
  }
  return j;
}

std::string job_name(uint64_t id) {
  return "job-" + std::to_string(id);
}

std::optional<uint64_t> parse_job_name(const std::string& name) {
  if (name.size() < 5 || name.size() > 24 || name.compare(0, 4, "job-") != 0) return std::nullopt;
  uint64_t id = 0;
  for (size_t i = 4; i < name.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return std::nullopt;
    id = id * 10 + static_cast<uint64_t>(name[i] - '0');
  }
  return id;
}

bool same_secret(const std::string& a, const std::string& b) {
  // Every byte of the longer string is visited whatever matches, and a length difference counts
  // as a mismatch without an early return.
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0, y = i < b.size() ? b[i] : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

}  // namespace cm::server
