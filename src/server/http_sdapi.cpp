// AUTOMATIC1111's web UI API, the subset front-ends use: txt2img and img2img become the same
// requests as /v1/images/generations and /v1/images/edits (a prompt names a class), so their
// images are the same for the same arguments; progress, interrupt, options and sd-models report
// on the one served model.
#include <httplib.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "cm/image_io.h"
#include "server/http_server.h"

namespace cm::server {

using nlohmann::json;

namespace {

[[noreturn]] void refuse(const std::string& param, const std::string& message) {
  throw ApiError{400, param + ": " + message, param};
}

// Fields A1111 clients send that have no meaning for a consistency model: accepted and ignored,
// so that clients work unchanged; anything else unknown is refused.
const std::set<std::string>& ignored_fields() {
  static const std::set<std::string> names = {
      "negative_prompt", "styles", "subseed", "subseed_strength", "seed_resize_from_h",
      "seed_resize_from_w", "sampler_name", "sampler_index", "scheduler", "cfg_scale",
      "restore_faces", "tiling", "do_not_save_samples", "do_not_save_grid", "eta", "s_min_uncond",
      "s_churn", "s_tmax", "s_tmin", "s_noise", "override_settings",
      "override_settings_restore_afterwards", "refiner_checkpoint", "refiner_switch_at",
      "disable_extra_networks", "comments", "enable_hr", "firstphase_width", "firstphase_height",
      "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y",
      "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt",
      "force_task_id", "script_name", "script_args", "send_images", "save_images",
      "alwayson_scripts", "infotext", "firstpass_image", "resize_mode", "image_cfg_scale",
      "mask_blur", "mask_blur_x", "mask_blur_y", "inpainting_fill", "inpaint_full_res",
      "inpaint_full_res_padding", "initial_noise_multiplier", "include_init_images",
      "mask_round", "latent_mask", "user"};
  return names;
}

int64_t json_int(const json& v, const std::string& param) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() &&
      std::fabs(v.get<double>()) < 9e18)
    return static_cast<int64_t>(v.get<double>());
  refuse(param, "must be an integer, got " + v.dump());
}

// The fields txt2img and img2img share, checked; `used` lists the ones the caller reads itself.
json parse_body(const std::string& body, const std::set<std::string>& used) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    throw ApiError{400, std::string("body: malformed JSON: ") + e.what(), "body"};
  }
  if (!j.is_object()) throw ApiError{400, "body: must be a JSON object", "body"};
  for (const auto& item : j.items())
    if (!used.count(item.key()) && !ignored_fields().count(item.key()))
      refuse(item.key(), "unknown field");
  return j;
}

struct Common {
  std::string prompt;
  std::optional<int64_t> seed;  // -1 or absent: random
  std::optional<int64_t> steps;
  int64_t n = 1;
};

Common common_fields(const json& j, const ModelInfo& model, int max_n) {
  Common c;
  auto has = [&](const char* k) { return j.contains(k) && !j.at(k).is_null(); };
  if (has("prompt")) {
    if (!j["prompt"].is_string()) refuse("prompt", "must be a string");
    c.prompt = j["prompt"].get<std::string>();
  }
  if (has("seed")) {
    const int64_t seed = json_int(j["seed"], "seed");
    if (seed < -1) refuse("seed", "must be -1 (random) or a seed >= 0, got " + j["seed"].dump());
    if (seed >= 0) c.seed = seed;
  }
  if (has("steps")) c.steps = json_int(j["steps"], "steps");
  int64_t batch = has("batch_size") ? json_int(j["batch_size"], "batch_size") : 1;
  int64_t iterations = has("n_iter") ? json_int(j["n_iter"], "n_iter") : 1;
  if (batch < 1 || iterations < 1 || batch * iterations > max_n)
    refuse(has("n_iter") ? "n_iter" : "batch_size",
           "batch_size x n_iter must be between 1 and " + std::to_string(max_n));
  c.n = batch * iterations;
  for (const char* side : {"width", "height"}) {
    if (has(side) && json_int(j[side], side) != model.sample_size)
      refuse(side, "this model makes " + std::to_string(model.sample_size) + "x" +
                       std::to_string(model.sample_size) + " images, got " + j[side].dump());
  }
  return c;
}

// A1111's answer: the images as bare base64 PNGs, the request, and `info` as a JSON string.
json sd_answer(const ImageRequest& r, const GenerateResult& result, const ModelInfo& model,
               const json& request) {
  json images = json::array(), infotexts = json::array();
  const auto pngs = encode_images(r, result, model);
  for (size_t i = 0; i < pngs.size(); ++i) {
    images.push_back(base64_encode(pngs[i]));
    std::optional<int64_t> label;
    if (!result.class_labels.empty()) label = result.class_labels[i];
    infotexts.push_back(parameters_text(r, model, label));
  }
  json info = {{"seed", r.seed},
               {"all_seeds", json::array()},
               {"steps", r.num_inference_steps},
               {"batch_size", r.n},
               {"width", model.sample_size},
               {"height", model.sample_size},
               {"sd_model_name", model.id},
               {"class_labels", result.class_labels},
               {"infotexts", infotexts}};
  for (int i = 0; i < r.n; ++i) info["all_seeds"].push_back(r.seed);
  return {{"images", images}, {"parameters", request}, {"info", info.dump()}};
}

}  // namespace

void HttpServer::routes_sdapi() {
  httplib::Server& s = *http_;
  {
    std::lock_guard<std::mutex> lock(sd_options_mutex_);
    sd_options_ = {{"sd_model_checkpoint", options_.model_id}, {"samples_format", "png"}};
  }

  s.Post("/sdapi/v1/txt2img", [this](const httplib::Request& req, httplib::Response& res) {
    BatchEngine* engine = ready_engine(res);
    if (!engine || !body_within_limit(req, res)) return;
    ImageRequest r;
    json body;
    try {
      body = parse_body(req.body, {"prompt", "seed", "steps", "batch_size", "n_iter", "width",
                                   "height", "denoising_strength"});
      const Common c = common_fields(body, model_, options_.max_n);
      // The same request /v1/images/generations would make of these values.
      json generation = {{"prompt", c.prompt}, {"n", c.n}};
      if (c.seed) generation["seed"] = *c.seed;
      if (c.steps) generation["steps"] = *c.steps;
      r = parse_generation(generation.dump(), model_, options_.max_n).request;
    } catch (const ApiError& e) {
      return send_error(res, e);
    }
    const auto id = submit(*engine, r, res);
    if (!id) return;
    const JobStatus status = await(*engine, *id, req);
    engine->forget(*id);
    if (answer_failure(status, res)) return;
    send_json(res, 200, sd_answer(r, status.result, model_, body));
  });

  s.Post("/sdapi/v1/img2img", [this](const httplib::Request& req, httplib::Response& res) {
    BatchEngine* engine = ready_engine(res);
    if (!engine) return;
    ImageRequest r;
    json body;
    try {
      body = parse_body(req.body,
                        {"prompt", "seed", "steps", "batch_size", "n_iter", "width", "height",
                         "init_images", "mask", "inpainting_mask_invert", "denoising_strength"});
      const Common c = common_fields(body, model_, options_.max_n);
      if (!body.contains("init_images") || !body["init_images"].is_array() ||
          body["init_images"].empty() || !body["init_images"][0].is_string())
        refuse("init_images", "must be an array holding one base64 PNG or JPEG");
      // The same request /v1/images/edits would make: inpainting with a mask (white =
      // regenerate, as A1111's), else SDEdit: the image noised to the level denoising_strength
      // picks on the model's noise range (log-linear: 0 = σ_min, 1 = σ_max), then denoised.
      Form form;
      const auto image = base64_decode(body["init_images"][0].get<std::string>(), "init_images");
      form.files["image"] = std::string(image.begin(), image.end());
      form.fields["prompt"] = c.prompt;
      form.fields["n"] = std::to_string(c.n);
      if (c.seed) form.fields["seed"] = std::to_string(*c.seed);
      const bool masked = body.contains("mask") && body["mask"].is_string() &&
                          !body["mask"].get<std::string>().empty();
      if (masked) {
        auto mask_bytes = base64_decode(body["mask"].get<std::string>(), "mask");
        const bool invert = body.contains("inpainting_mask_invert") &&
                            !body["inpainting_mask_invert"].is_null() &&
                            json_int(body["inpainting_mask_invert"], "inpainting_mask_invert") != 0;
        if (invert) {
          ImageU8 m;
          try {
            m = convert_channels(decode_image(mask_bytes, "mask"), 1);
          } catch (const Error& e) {
            refuse("mask", std::string("not a readable PNG or JPEG (") + e.what() + ")");
          }
          for (auto& v : m.pixels) v = static_cast<uint8_t>(255 - v);
          mask_bytes = encode_png(m);
        }
        form.files["mask"] = std::string(mask_bytes.begin(), mask_bytes.end());
        form.fields["task"] = "inpaint";
        if (c.steps) form.fields["steps"] = std::to_string(*c.steps);
      } else {
        double strength = 0.75;  // A1111's default
        if (body.contains("denoising_strength") && !body["denoising_strength"].is_null()) {
          if (!body["denoising_strength"].is_number())
            refuse("denoising_strength", "must be a number in (0, 1]");
          strength = body["denoising_strength"].get<double>();
          if (!(strength > 0 && strength <= 1))
            refuse("denoising_strength", "must be in (0, 1], got " +
                                             body["denoising_strength"].dump());
        }
        const double sigma = std::exp(std::log(model_.sigma_min) +
                                      strength * (std::log(model_.sigma_max) -
                                                  std::log(model_.sigma_min)));
        form.fields["task"] = "denoise";
        form.fields["sigma"] = std::to_string(sigma);
        form.fields["add_noise"] = "true";
      }
      r = parse_edit(form, model_, options_.max_n);
    } catch (const ApiError& e) {
      return send_error(res, e);
    }
    const auto id = submit(*engine, r, res);
    if (!id) return;
    const JobStatus status = await(*engine, *id, req);
    engine->forget(*id);
    if (status.state == JobState::kFailed && status.refused)
      return send_error(res, {400, status.error, ""});
    if (answer_failure(status, res)) return;
    body.erase("init_images");  // A1111 does not echo the images either
    body.erase("mask");
    send_json(res, 200, sd_answer(r, status.result, model_, body));
  });

  s.Get("/sdapi/v1/progress", [this](const httplib::Request&, httplib::Response& res) {
    const BatchEngine* engine = engine_.load(std::memory_order_acquire);
    json state = {{"skipped", false},     {"interrupted", false}, {"job", ""},
                  {"job_count", 0},       {"job_timestamp", "0"}, {"job_no", 0},
                  {"sampling_step", 0},   {"sampling_steps", 0}};
    double progress = 0;
    if (engine) {
      const auto active = engine->active();
      state["job_count"] = active.size();
      for (const auto& job : active) {
        if (job.state != JobState::kRunning) continue;
        // The oldest running request: the one the next images finish for.
        state["job"] = job_name(job.id);
        state["sampling_step"] = job.step;
        state["sampling_steps"] = job.num_steps;
        progress = job.num_steps > 0 ? static_cast<double>(job.step) / job.num_steps : 0;
        break;
      }
    }
    send_json(res, 200,
              {{"progress", progress},
               {"eta_relative", 0.0},
               {"state", state},
               {"current_image", nullptr},
               {"textinfo", nullptr}});
  });

  s.Post("/sdapi/v1/interrupt", [this](const httplib::Request&, httplib::Response& res) {
    BatchEngine* engine = engine_.load(std::memory_order_acquire);
    const int interrupted = engine ? engine->cancel_running() : 0;
    send_json(res, 200, {{"interrupted", interrupted}});
  });

  s.Get("/sdapi/v1/options", [this](const httplib::Request&, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(sd_options_mutex_);
    send_json(res, 200, sd_options_);
  });
  s.Post("/sdapi/v1/options", [this](const httplib::Request& req, httplib::Response& res) {
    if (!body_within_limit(req, res)) return;
    json j;
    try {
      j = json::parse(req.body);
    } catch (const json::parse_error& e) {
      return send_error(res, {400, std::string("body: malformed JSON: ") + e.what(), "body"});
    }
    if (!j.is_object()) return send_error(res, {400, "body: must be a JSON object", "body"});
    // One model is served: choosing another is refused rather than silently ignored.
    if (j.contains("sd_model_checkpoint") && j["sd_model_checkpoint"] != options_.model_id)
      return send_error(res, {400,
                              "sd_model_checkpoint: only '" + options_.model_id +
                                  "' is served here, got " + j["sd_model_checkpoint"].dump(),
                              "sd_model_checkpoint"});
    if (j.contains("samples_format") && j["samples_format"] != "png")
      return send_error(
          res, {400, "samples_format: only png is served, got " + j["samples_format"].dump(),
                "samples_format"});
    std::lock_guard<std::mutex> lock(sd_options_mutex_);
    for (const auto& item : j.items()) sd_options_[item.key()] = item.value();
    send_json(res, 200, nullptr);
  });

  s.Get("/sdapi/v1/sd-models", [this](const httplib::Request&, httplib::Response& res) {
    const std::string name = std::filesystem::path(options_.model_id).filename().string();
    send_json(res, 200,
              json::array({{{"title", options_.model_id},
                            {"model_name", name.empty() ? options_.model_id : name},
                            {"hash", nullptr},
                            {"sha256", nullptr},
                            {"filename", options_.model_id},
                            {"config", nullptr}}}));
  });
}

}  // namespace cm::server
