// The HTTP front of cm serve (cpp-httplib): it listens before the model is loaded, so /health can
// say 503 "loading", and routes every generation to a BatchEngine once it is ready.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "cm/server.h"
#include "server/http_api.h"
#include "server/metrics.h"

namespace httplib {
class Server;
}

namespace cm::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;          // empty: no authentication
  std::string model_id;         // /v1/models before the model is ready
  int max_n = 16;               // images per request
  size_t max_body = 64 * 1024;  // bytes; larger bodies get 413
  int http_threads = 72;
  bool quiet = false;  // no line on stderr for a 5xx answer        // connections served at once (a
                       // synchronous request holds one)
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
  HttpOptions options_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  std::atomic<BatchEngine*> engine_{nullptr};
  ModelInfo model_;  // written before engine_ is published
  std::atomic<bool> shutting_down_{false};
  RequestCounter requests_;
};

}  // namespace cm::server
