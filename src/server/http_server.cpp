#include "server/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <optional>

#include "server/peer_socket.h"

namespace cm::server {

using nlohmann::json;

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  // Replacement rather than an exception for text that is not UTF-8 (it can only come from a
  // client's own bytes echoed in a message).
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  send_json(res, e.status, error_json(e));
}

namespace assets {
extern const unsigned char index_html[];
extern const size_t index_html_size;
extern const unsigned char openapi_json[];
extern const size_t openapi_json_size;
}  // namespace assets

namespace {

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
  // httplib writes a response's headers and body separately: with Nagle's algorithm the body
  // waits for the client's delayed ACK, ~40 ms on every request (measured: 55 ms p50 for an
  // image the model makes in 7 ms). Accepted sockets inherit the listener's TCP_NODELAY.
  http_->set_tcp_nodelay(true);
  // httplib's default also sets SO_REUSEPORT, which lets a second server bind a port in use and
  // take half its connections; only SO_REUSEADDR, so a busy port is an error.
  int listener = -1;
  http_->set_socket_options([&listener](int sock) {
    const int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listener = sock;
  });
  // httplib closes a kept-alive connection after 5 requests by default: closed-loop clients then
  // reconnect every fifth image, and a request sent as the server closes fails.
  http_->set_keep_alive_max_count(100000);
  if (!http_->bind_to_port(options_.host, options_.port))
    throw Error("--host/--port: cannot listen on " + options_.host + ":" +
                std::to_string(options_.port) + " (in use, or not an address of this machine)");
  // Debian's httplib listens with a backlog of 5: 64 clients connecting at once overflowed it, and
  // the refused ones retried after a second (p99 2.7 s at concurrency 64). listen() again on the
  // bound socket raises it.
  if (listener >= 0) ::listen(listener, SOMAXCONN);
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
    // CORS: only the origins --cors-origins lists; preflights are answered before the key check
    // (browsers send them without credentials).
    const std::string origin = req.get_header_value("Origin");
    bool allowed = false;
    for (const auto& o : options_.cors_origins) allowed = allowed || o == "*" || o == origin;
    if (!origin.empty() && allowed) {
      res.set_header("Access-Control-Allow-Origin", origin);
      res.set_header("Vary", "Origin");
    }
    if (req.method == "OPTIONS") {
      if (!origin.empty() && allowed) {
        res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        res.set_header("Access-Control-Allow-Headers",
                       "Authorization, Content-Type, X-Api-Key, Accept");
        res.set_header("Access-Control-Max-Age", "600");
      }
      res.status = 204;
      return httplib::Server::HandlerResponse::Handled;
    }
    static const std::vector<std::string> open = {"/health", "/v1/models", "/", "/openapi.json"};
    if (options_.api_key.empty() || std::find(open.begin(), open.end(), req.path) != open.end())
      return httplib::Server::HandlerResponse::Unhandled;
    if (authorized(req, options_.api_key)) return httplib::Server::HandlerResponse::Unhandled;
    res.set_header("WWW-Authenticate", "Bearer");
    send_error(res,
               {401, "a valid API key is required (Authorization: Bearer KEY or X-Api-Key)", ""});
    return httplib::Server::HandlerResponse::Handled;
  });
  // Errors httplib answers itself (413, 404, 400 for a bad request line) get a JSON body too.
  s.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty() || res.status == 204) return;
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
      model["class_names"] = model_.class_names.empty() ? json(nullptr) : json(model_.class_names);
      model["num_train_timesteps"] = model_.num_train_timesteps;
      model["dtype"] = model_.dtype;
      model["max_batch"] = engine->options().max_batch;
      model["max_n"] = options_.max_n;
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
  s.Get("/", [](const httplib::Request&, httplib::Response& res) {
    // Everything the page needs is in it; it talks to this origin only.
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                   "img-src data: blob:; connect-src 'self'; form-action 'none'; "
                   "frame-ancestors 'none'; base-uri 'none'");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("Referrer-Policy", "no-referrer");
    res.set_header("Cache-Control", "no-cache");  // a new binary's page is picked up at once
    res.set_content(reinterpret_cast<const char*>(assets::index_html), assets::index_html_size,
                    "text/html; charset=utf-8");
  });
  s.Get("/openapi.json", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(reinterpret_cast<const char*>(assets::openapi_json), assets::openapi_json_size,
                    "application/json");
  });

  routes_openai();
  routes_jobs();
  routes_sdapi();
}

BatchEngine* HttpServer::ready_engine(httplib::Response& res) const {
  BatchEngine* engine = engine_.load(std::memory_order_acquire);
  if (shutting_down_ || !engine) {
    res.set_header("Retry-After", "5");
    send_error(
        res,
        {503, shutting_down_ ? "the server is shutting down" : "the model is still loading", ""});
    return nullptr;
  }
  return engine;
}

bool HttpServer::body_within_limit(const httplib::Request& req, httplib::Response& res) const {
  if (req.body.size() <= options_.max_json_body) return true;
  send_error(
      res, {413, "body: larger than " + std::to_string(options_.max_json_body) + " bytes", "body"});
  return false;
}

std::optional<uint64_t> HttpServer::submit(BatchEngine& engine, const ImageRequest& r,
                                           httplib::Response& res) {
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
}

JobStatus HttpServer::await(BatchEngine& engine, uint64_t id, const httplib::Request& req) {
  const int fd = find_peer_socket(req.local_port, req.remote_addr, req.remote_port);
  uint64_t epoch = 0;
  bool cancelled = false;
  for (;;) {
    const auto status = engine.wait_change(
        id, &epoch, std::chrono::steady_clock::now() + std::chrono::milliseconds(200));
    if (!status) {  // only this handler forgets it, so this cannot happen; say so if it does
      JobStatus gone;
      gone.id = id;
      gone.state = JobState::kFailed;
      gone.error = "the request was forgotten before it ended";
      return gone;
    }
    if (status->state == JobState::kDone || status->state == JobState::kFailed ||
        status->state == JobState::kCancelled)
      return *status;
    // A client that has gone away: its work is dropped at the next step.
    if (!cancelled && fd >= 0 && peer_closed(fd)) {
      engine.cancel(id);
      cancelled = true;
    }
  }
}

bool HttpServer::answer_failure(const JobStatus& status, httplib::Response& res) const {
  if (status.state == JobState::kDone) return false;
  if (status.state == JobState::kCancelled)
    send_error(res, {503, "the request was cancelled", ""});
  else if (status.timed_out)
    send_error(res, {504, status.error, ""});
  else
    send_error(res, {500, status.error, ""});
  return true;
}

void HttpServer::routes_openai() {
  httplib::Server& s = *http_;
  s.Post("/v1/images/generations", [this](const httplib::Request& req, httplib::Response& res) {
    BatchEngine* engine = ready_engine(res);
    if (!engine || !body_within_limit(req, res)) return;
    ImageRequest r;
    try {
      r = parse_generation(req.body, model_, options_.max_n).request;
    } catch (const ApiError& e) {
      return send_error(res, e);
    }
    const auto id = submit(*engine, r, res);
    if (!id) return;
    const JobStatus status = await(*engine, *id, req);
    engine->forget(*id);
    if (answer_failure(status, res)) return;
    send_json(res, 200, images_json(r, status.result, model_));
  });
  s.Post("/v1/images/edits", [this](const httplib::Request& req, httplib::Response& res) {
    BatchEngine* engine = ready_engine(res);
    if (!engine) return;
    if (!req.is_multipart_form_data())
      return send_error(res, {400, "body: must be multipart/form-data with an image part", "body"});
    Form form;
    for (const auto& [name, part] : req.files) {
      if (part.filename.empty() && part.content_type.empty())
        form.fields[name] = part.content;
      else
        form.files[name] = part.content;
    }
    ImageRequest r;
    try {
      r = parse_edit(form, model_, options_.max_n);
    } catch (const ApiError& e) {
      return send_error(res, e);
    }
    const auto id = submit(*engine, r, res);
    if (!id) return;
    const JobStatus status = await(*engine, *id, req);
    engine->forget(*id);
    if (status.state == JobState::kFailed && status.refused)
      // cm::edit's own checks (a size that does not fit the task, ...) are the client's error.
      return send_error(res, {400, status.error, ""});
    if (answer_failure(status, res)) return;
    send_json(res, 200, images_json(r, status.result, model_));
  });
}

}  // namespace cm::server
