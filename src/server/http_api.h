// The HTTP API's request bodies and responses, apart from the transport: an OpenAI Images
// generation body becomes an ImageRequest (or an ApiError naming the field), a finished request
// becomes PNGs with the `parameters` text cm generate writes.
#pragma once

#include <cstdint>
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
  std::string dtype = "float32";
};

struct ParsedGeneration {
  ImageRequest request;
};

// The body of POST /v1/images/generations or /v1/jobs. OpenAI's fields: prompt (a class name or
// number, or empty), n, response_format ("b64_json"), output_format ("png"), size, model, user;
// extensions: seed, steps, timesteps, class_labels. Throws ApiError (400) naming the field for
// malformed JSON, an unknown field, a wrong type or an out-of-range value. A missing seed is
// drawn at random (and reported with the images).
ParsedGeneration parse_generation(const std::string& body, const ModelInfo& model, int max_n);

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

// "job-12" <-> 12; std::nullopt for anything else.
std::string job_name(uint64_t id);
std::optional<uint64_t> parse_job_name(const std::string& name);

// Constant-time string equality, for API keys: the time taken does not tell how much matched.
bool same_secret(const std::string& a, const std::string& b);

}  // namespace cm::server
