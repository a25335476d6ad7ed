// The HTTP front of cm serve (cpp-httplib): it listens before the model is loaded, so /health can
// say 503 "loading", and routes every generation or edit to a BatchEngine once it is ready.
// Routes by family: http_server.cpp (health, models, metrics, the page, OpenAI Images),
// http_jobs.cpp (native jobs and their event streams), http_sdapi.cpp (AUTOMATIC1111's API).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cm/server.h"
#include "server/http_api.h"
#include "server/metrics.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace cm::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;                    // empty: no authentication
  std::vector<std::string> cors_origins;  // origins allowed cross-origin access ("*": any)
  std::string model_id;                   // /v1/models before the model is ready
  int max_n = 16;                         // images per request
  size_t max_json_body = 64 * 1024;       // bytes of a JSON body; larger ones get 413
  size_t max_body = 8 * 1024 * 1024;      // bytes of any body (image uploads); larger: 413
  int http_threads = 72;  // connections served at once (a synchronous request holds one)
  int keep_alive_seconds = 15;  // server-sent event streams send a comment this often
  bool quiet = false;           // no line on stderr for a 5xx answer
};

class HttpServer {
 public:
  explicit HttpServer(HttpOptions options);
  ~HttpServer();
  // Binds and starts serving on a thread of its own; cm::Error naming --host/--port when the
  // address cannot be bound.
  void start();
  // From now on generations go to `engine` (which must outlive the server's use of it).
  void set_ready(BatchEngine* engine, const ModelInfo& model);
  // New work gets 503 from now on; /health says "shutting down".
  void begin_shutdown();
  // Stops listening and returns once the handlers have finished.
  void stop();

 private:
  void routes();
  void routes_openai();
  void routes_jobs();
  void routes_sdapi();
  // The engine, or nullptr after answering 503 (loading or stopping).
  BatchEngine* ready_engine(httplib::Response& res) const;
  // Submits; nullopt after answering 429/503/400.
  std::optional<uint64_t> submit(BatchEngine& engine, const ImageRequest& request,
                                 httplib::Response& res);
  // Waits for a request on behalf of a synchronous client, cancelling it if the client goes away.
  JobStatus await(BatchEngine& engine, uint64_t id, const httplib::Request& req);
  // A synchronous request's failure as its HTTP answer (500, 504, 503); false when it is done.
  bool answer_failure(const JobStatus& status, httplib::Response& res) const;
  // The JSON body, or nullopt after answering 413.
  bool body_within_limit(const httplib::Request& req, httplib::Response& res) const;

  HttpOptions options_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  std::atomic<BatchEngine*> engine_{nullptr};
  ModelInfo model_;  // written before engine_ is published
  std::atomic<bool> shutting_down_{false};
  RequestCounter requests_;
  std::mutex sd_options_mutex_;
  nlohmann::json sd_options_;  // /sdapi/v1/options, as last set
};

// Shared by the route files.
void send_json(httplib::Response& res, int status, const nlohmann::json& body);
void send_error(httplib::Response& res, const ApiError& e);

}  // namespace cm::server
