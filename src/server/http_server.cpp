#include "server/http_server.h"

#include <httplib.h>

#include <chrono>
#include <iostream>
#include <optional>

namespace cm::server {

using nlohmann::json;

namespace {

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  // Replacement rather than an exception for text that is not UTF-8 (it can only come from a
  // client's own bytes echoed in a message).
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  send_json(res, e.status, error_json(e));
}

// Authorization: Bearer KEY, or X-Api-Key: KEY.
bool authorized(const httplib::Request& req, const std::string& key) {
  const std::string bearer = "Bearer ";
  const std::string auth = req.get_header_value("Authorization");
  if (auth.compare(0, bearer.size(), bearer) == 0 && same_secret(auth.substr(bearer.size()), key))
    return true;
  return req.has_header("X-Api-Key") && same_secret(req.get_header_value("X-Api-Key"), key);
}

}  // namespace

HttpServer::HttpServer(HttpOptions options)
    : options_(std::move(options)), http_(std::make_unique<httplib::Server>()) {
  routes();
}

HttpServer::~HttpServer() {
  stop();
}

void HttpServer::start() {
  const int threads = options_.http_threads;
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  if (!http_->bind_to_port(options_.host, options_.port))
    throw Error("--host/--port: cannot listen on " + options_.host + ":" +
                std::to_string(options_.port) + " (in use, or not an address of this machine)");
  thread_ = std::thread([this] { http_->listen_after_bind(); });
}

void HttpServer::set_ready(BatchEngine* engine, const ModelInfo& model) {
  model_ = model;
  engine_.store(engine, std::memory_order_release);
}

void HttpServer::begin_shutdown() {
  shutting_down_ = true;
}

void HttpServer::stop() {
  if (!thread_.joinable()) return;
  http_->stop();
  thread_.join();
}

void HttpServer::routes() {
  httplib::Server& s = *http_;
  s.set_payload_max_length(options_.max_body);
  s.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    requests_.count(req.method, req.path, res.status);
    // Server-side failures are the operator's business too; the client's own errors are not.
    if (res.status >= 500 && res.status != 503 && !options_.quiet)
      std::cerr << req.method << " " << req.path << ": " << res.status << " " << res.body
                << std::endl;
  });
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (options_.api_key.empty() || req.path == "/health" || req.path == "/v1/models")
      return httplib::Server::HandlerResponse::Unhandled;
    if (authorized(req, options_.api_key)) return httplib::Server::HandlerResponse::Unhandled;
    res.set_header("WWW-Authenticate", "Bearer");
    send_error(res,
               {401, "a valid API key is required (Authorization: Bearer KEY or X-Api-Key)", ""});
    return httplib::Server::HandlerResponse::Handled;
  });
  // Errors httplib answers itself (413, 404, 400 for a bad request line) get a JSON body too.
  s.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string message = "request failed";
    std::string param;
    if (res.status == 404) message = "no such endpoint";
    if (res.status == 413) {
      message = "body: larger than " + std::to_string(options_.max_body) + " bytes";
      param = "body";
    }
    send_error(res, {res.status, message, param});
  });
  s.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string message = "internal error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          message = e.what();
        } catch (...) {
        }
        send_error(res, {500, message, ""});
      });

  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (shutting_down_) return send_json(res, 503, {{"status", "shutting down"}});
    if (!engine_.load(std::memory_order_acquire))
      return send_json(res, 503, {{"status", "loading"}});
    send_json(res, 200, {{"status", "ok"}});
  });
  s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    json model = {{"id", options_.model_id},
                  {"object", "model"},
                  {"created", 0},
                  {"owned_by", "consistency.cpp"}};
    if (const BatchEngine* engine = engine_.load(std::memory_order_acquire)) {
      model["ready"] = true;
      model["size"] = std::to_string(model_.sample_size) + "x" + std::to_string(model_.sample_size);
      model["num_classes"] = model_.num_classes ? json(*model_.num_classes) : json(nullptr);
      model["dtype"] = model_.dtype;
      model["max_batch"] = engine->options().max_batch;
    } else {
      model["ready"] = false;
    }
    send_json(res, 200, {{"object", "list"}, {"data", json::array({model})}});
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    const BatchEngine* engine = engine_.load(std::memory_order_acquire);
    EngineStats stats;
    if (engine) stats = engine->stats();
    res.set_content(render_metrics(requests_, engine ? &stats : nullptr),
                    "text/plain; version=0.0.4");
  });

  // The engine, or a 503 while loading or stopping; then the request, or a 400.
  auto admit = [this](const httplib::Request& req, httplib::Response& res,
                      ImageRequest* request) -> BatchEngine* {
    BatchEngine* engine = engine_.load(std::memory_order_acquire);
    if (shutting_down_ || !engine) {
      res.set_header("Retry-After", "5");
      send_error(
          res,
          {503, shutting_down_ ? "the server is shutting down" : "the model is still loading", ""});
      return nullptr;
    }
    try {
      *request = parse_generation(req.body, model_, options_.max_n).request;
    } catch (const ApiError& e) {
      send_error(res, e);
      return nullptr;
    }
    return engine;
  };
  auto submit = [](BatchEngine& engine, const ImageRequest& r,
                   httplib::Response& res) -> std::optional<uint64_t> {
    try {
      return engine.submit(r);
    } catch (const QueueFull& e) {
      res.set_header("Retry-After", "1");
      send_error(res, {429, e.what(), ""});
    } catch (const ShuttingDown& e) {
      send_error(res, {503, e.what(), ""});
    } catch (const Error& e) {
      send_error(res, {400, e.what(), ""});
    }
    return std::nullopt;
  };

  s.Post("/v1/images/generations", [=](const httplib::Request& req, httplib::Response& res) {
    ImageRequest r;
    BatchEngine* engine = admit(req, res, &r);
    if (!engine) return;
    const auto id = submit(*engine, r, res);
    if (!id) return;
    const auto status = engine->wait(*id);
    engine->forget(*id);
    if (!status || status->state == JobState::kCancelled)
      return send_error(res, {503, "the request was cancelled", ""});
    if (status->state == JobState::kFailed) return send_error(res, {500, status->error, ""});
    send_json(res, 200, images_json(r, status->result, model_));
  });
  s.Post("/v1/jobs", [=](const httplib::Request& req, httplib::Response& res) {
    ImageRequest r;
    BatchEngine* engine = admit(req, res, &r);
    if (!engine) return;
    const auto id = submit(*engine, r, res);
    if (!id) return;
    const auto status = engine->status(*id);
    if (!status) return send_error(res, {500, "the job ended and was forgotten at once", ""});
    res.set_header("Location", "/v1/jobs/" + job_name(*id));
    send_json(res, 202, job_json(*status, model_));
  });

  // The job a path names, or a 404 (also while loading: no job exists yet).
  auto find_job = [this](const httplib::Request& req, httplib::Response& res,
                         std::optional<JobStatus>* status) -> BatchEngine* {
    BatchEngine* engine = engine_.load(std::memory_order_acquire);
    const std::string name = req.matches[1];
    const auto id = parse_job_name(name);
    if (engine && id) *status = engine->status(*id);
    if (!*status) {
      send_error(res, {404, "no job '" + name + "' (unknown, or finished long ago)", ""});
      return nullptr;
    }
    return engine;
  };
  s.Get(R"(/v1/jobs/([^/]+))", [=](const httplib::Request& req, httplib::Response& res) {
    std::optional<JobStatus> status;
    if (!find_job(req, res, &status)) return;
    if (req.get_header_value("Accept").find("image/png") == std::string::npos)
      return send_json(res, 200, job_json(*status, model_));
    if (status->state != JobState::kDone)
      return send_error(res, {409,
                              "the job is " + std::string(job_state_name(status->state)) +
                                  ", not done: no image yet",
                              ""});
    int64_t index = 0;
    if (req.has_param("index")) {
      const std::string text = req.get_param_value("index");
      try {
        size_t used = 0;
        index = std::stoll(text, &used);
        if (used != text.size()) index = -1;
      } catch (const std::exception&) {
        index = -1;
      }
      if (index < 0 || index >= status->request.n)
        return send_error(res, {400,
                                "index: must be an image number in [0, " +
                                    std::to_string(status->request.n) + "), got '" + text + "'",
                                "index"});
    }
    const auto pngs = encode_images(status->request, status->result, model_);
    const auto& png = pngs.at(index);
    res.set_content(reinterpret_cast<const char*>(png.data()), png.size(), "image/png");
  });
  s.Post(R"(/v1/jobs/([^/]+)/cancel)", [=](const httplib::Request& req, httplib::Response& res) {
    std::optional<JobStatus> status;
    BatchEngine* engine = find_job(req, res, &status);
    if (!engine) return;
    engine->cancel(status->id);
    const auto now = engine->status(status->id);
    send_json(res, 200, job_json(now ? *now : *status, model_));
  });
}

}  // namespace cm::server
