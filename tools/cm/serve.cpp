// cm serve: an HTTP server for a consistency model (OpenAI Images API, native jobs, /metrics),
// batching requests at any sampling step into shared UNet calls (docs/server.md).
#include <CLI/CLI.hpp>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <memory>

#include "cm/config.h"
#include "cm/error.h"
#include "cm/hub.h"
#include "cm/pipeline.h"
#include "cm/server.h"
#include "common.h"
#include "hub_progress.h"
#include "memory_policy.h"
#include "server/http_server.h"
#include "subcommands.h"

namespace cm::cli {
namespace {

namespace fs = std::filesystem;

struct ServeArgs {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;
  std::string dtype = "float32";
  std::string variant;
  std::string device = "cpu";
  int threads = 0;
  int max_batch = 16;
  int batch_wait_ms = 0;
  int max_queue = 64;
  int max_n = 16;
  int keep_jobs = 256;
  bool quiet = false;
};

void check_flags(const ServeArgs& a) {
  if (a.port < 1 || a.port > 65535)
    throw Error("--port: must be between 1 and 65535, got " + std::to_string(a.port));
  if (a.max_batch < 1)
    throw Error("--max-batch: must be at least 1, got " + std::to_string(a.max_batch));
  if (a.max_queue < 1)
    throw Error("--max-queue: must be at least 1, got " + std::to_string(a.max_queue));
  if (a.batch_wait_ms < 0)
    throw Error("--batch-wait-ms: must not be negative, got " + std::to_string(a.batch_wait_ms));
  if (a.max_n < 1) throw Error("--max-n: must be at least 1, got " + std::to_string(a.max_n));
  if (a.keep_jobs < 1)
    throw Error("--keep-jobs: must be at least 1, got " + std::to_string(a.keep_jobs));
}

int run_serve(const ServeArgs& a) {
  check_flags(a);
  LoadOptions load;
  load.dtype = parse_dtype(a.dtype);
  load.device = parse_device(a.device);
  load.variant = a.variant;
  const std::string model = model_or_default(a.model);
  if (a.model.empty() && !fs::exists(model))
    throw Error("no -m given and the default model " + model + " is missing");

  // SIGINT and SIGTERM are taken by sigwait below: blocked here, before any thread exists, so
  // every thread inherits the mask and none is interrupted mid-request.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  server::HttpOptions http;
  http.host = a.host;
  http.port = a.port;
  http.api_key = a.api_key;
  http.model_id = model;
  http.max_n = a.max_n;
  http.quiet = a.quiet;
  http.http_threads = a.max_queue + 8;  // every queued synchronous request holds a connection
  server::HttpServer front(http);
  front.start();  // /health answers 503 while the model loads
  log(a.quiet, "listening on http://" + a.host + ":" + std::to_string(a.port));
  const bool loopback = a.host == "127.0.0.1" || a.host == "localhost" || a.host == "::1";
  if (!loopback && a.api_key.empty())
    std::cerr << "warning: listening on " << a.host << " without --api-key: anyone who can reach "
              << "this address can use the server" << std::endl;

  set_threads(a.threads);
  const std::string folder = resolve_model(model, hub_options(a.variant, a.quiet));
  auto pipe = ConsistencyModelPipeline::from_pretrained(folder, load);
  memory_policy_for_running();
  server::EngineOptions engine_options;
  engine_options.max_batch = a.max_batch;
  engine_options.batch_wait_ms = a.batch_wait_ms;
  engine_options.max_queue = a.max_queue;
  engine_options.threads = a.threads > 0 ? a.threads : 0;
  engine_options.keep_finished = static_cast<size_t>(a.keep_jobs);
  server::BatchEngine engine(pipe, engine_options);

  const UNetConfig& config = pipe.unet()->config();
  server::ModelInfo info;
  info.id = model;
  info.sample_size = config.sample_size;
  info.channels = config.out_channels;
  info.num_classes = config.num_class_embeds;
  info.class_names = read_class_names(folder);
  info.num_train_timesteps = pipe.scheduler().config().num_train_timesteps;
  info.dtype = a.dtype;  // as cm generate writes it into the PNG text
  front.set_ready(&engine, info);
  log(a.quiet, "ready: " + model);

  int signal = 0;
  sigwait(&stop_signals, &signal);
  log(a.quiet, std::string("stopping (") + (signal == SIGINT ? "SIGINT" : "SIGTERM") +
                   "): finishing the requests in flight");
  front.begin_shutdown();
  engine.drain();
  front.stop();
  return 0;
}

}  // namespace

Runner add_serve(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  app.add_option("-m,--model", args->model,
                 "diffusers pipeline folder (or a UNet folder), or a Hugging Face Hub repository "
                 "id org/name[@revision] (default: the shipped Fashion-MNIST model)");
  app.add_option("--host", args->host, "address to listen on (loopback unless told otherwise)")
      ->capture_default_str();
  app.add_option("--port", args->port, "TCP port")->capture_default_str();
  app.add_option("--api-key", args->api_key,
                 "require this key (Authorization: Bearer KEY or X-Api-Key) except on /health "
                 "and /v1/models");
  app.add_option("--max-batch", args->max_batch, "images per UNet call")->capture_default_str();
  app.add_option("--batch-wait-ms", args->batch_wait_ms,
                 "an idle server waits this long for more requests to batch")
      ->capture_default_str();
  app.add_option("--max-queue", args->max_queue,
                 "requests waiting or running; more get 429 with Retry-After")
      ->capture_default_str();
  app.add_option("--max-n", args->max_n, "images per request (n)")->capture_default_str();
  app.add_option("--keep-jobs", args->keep_jobs,
                 "finished jobs kept (with their images) for GET /v1/jobs/{id}")
      ->capture_default_str();
  app.add_option("--variant", args->variant,
                 "weights variant, e.g. fp16 (diffusion_pytorch_model.fp16.safetensors)");
  app.add_option("--dtype", args->dtype, "float32 (exact), bfloat16 or float16")
      ->capture_default_str();
  app.add_option("--device", args->device, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("-t,--threads", args->threads, "CPU threads (default: all)");
  app.add_flag("-q,--quiet", args->quiet, "no progress output on stderr");
  return [args] { return run_serve(*args); };
}

}  // namespace cm::cli
