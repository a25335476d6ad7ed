// The HTTP API's request bodies and responses, apart from the transport: an OpenAI Images
// generation body becomes an ImageRequest (or an ApiError naming the field), a finished request
// becomes PNGs with the `parameters` text cm generate writes.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cm/server.h"

namespace cm::server {

// A refusal with its HTTP status; `param` names the body field at fault (empty: none).
struct ApiError {
  int status = 400;
  std::string message;
  std::string param;
};

// What the server knows about its model, for checking requests and describing images.
struct ModelInfo {
  std::string id;       // as given to -m; /v1/models and the PNG text use it
  int sample_size = 0;  // images are sample_size x sample_size
  int channels = 3;
  std::optional<int> num_classes;  // class-conditional models
  std::vector<std::string> class_names;
  int num_train_timesteps = 40;
  double sigma_min = 0.002, sigma_max = 80.0;  // the scheduler's noise range
  std::string dtype = "float32";
  bool winograd = false;  // cm serve --winograd took effect: the PNG text says so
};

struct ParsedGeneration {
  ImageRequest request;
  bool stream = false;  // POST /v1/jobs: answer with server-sent events
};

// The body of POST /v1/images/generations or /v1/jobs. OpenAI's fields: prompt (a class name or
// number, or empty), n, response_format ("b64_json"), output_format ("png"), size, model, user;
// extensions: seed, steps, timesteps, class_labels, stream. Throws ApiError (400) naming the field for
// malformed JSON, an unknown field, a wrong type or an out-of-range value. A missing seed is
// drawn at random (and reported with the images).
ParsedGeneration parse_generation(const std::string& body, const ModelInfo& model, int max_n);

// A multipart form's parts by name: text fields and uploaded files' bytes.
struct Form {
  std::map<std::string, std::string> fields;
  std::map<std::string, std::string> files;
};

// The largest image an edit accepts, in pixels (it is resized to the model's size anyway).
constexpr int64_t kMaxUploadPixels = 4096 * 4096;

// POST /v1/images/edits: a zero-shot edit (ImageRequest::edit). Parts: image (PNG or JPEG; any
// size, resized to the model's as cm edit does), mask (optional: white = regenerate, or OpenAI's
// convention for a mask with alpha: transparent = regenerate; absent: the image's own
// transparency), task (inpaint when absent; colorize, superres, stroke, denoise), prompt, n,
// seed, steps, timesteps ("22,0"), sigma (denoise), factor (superres), add_noise (denoise),
// response_format, output_format, size, model, user. Throws ApiError naming the part.
ImageRequest parse_edit(const Form& form, const ModelInfo& model, int max_n);

// Standard base64 (a data: URL prefix is skipped); ApiError naming `param` when malformed.
std::vector<uint8_t> base64_decode(const std::string& text, const std::string& param);

// A prompt naming one class of a class-conditional model: its number or its name in
// class_names.json (any case); ApiError on `prompt` otherwise.
int64_t class_from_prompt(const std::string& prompt, const ModelInfo& model);

// OpenAI's error object: {"error": {"message", "type", "param", "code"}}.
nlohmann::json error_json(const ApiError& error);

std::string base64_encode(const std::vector<uint8_t>& bytes);

// The request's images as PNG files, each with the tEXt `parameters` of cm generate.
std::vector<std::vector<uint8_t>> encode_images(const ImageRequest& request,
                                                const GenerateResult& result,
                                                const ModelInfo& model);

// {"created", "data": [{"b64_json", "seed", "class_label"}]}: the Images API response.
nlohmann::json images_json(const ImageRequest& request, const GenerateResult& result,
                           const ModelInfo& model);

// A job's state for GET /v1/jobs/{id}: id, status, position or step, error, data when done.
nlohmann::json job_json(const JobStatus& status, const ModelInfo& model);

// The `parameters` text a PNG of this request carries (cm generate's, or cm edit's for an edit).
std::string parameters_text(const ImageRequest& request, const ModelInfo& model,
                            std::optional<int64_t> label);

// "job-12" <-> 12; std::nullopt for anything else.
std::string job_name(uint64_t id);
std::optional<uint64_t> parse_job_name(const std::string& name);

// Constant-time string equality, for API keys: the time taken does not tell how much matched.
bool same_secret(const std::string& a, const std::string& b);

}  // namespace cm::server
