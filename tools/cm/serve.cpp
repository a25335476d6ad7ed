// cm serve: an HTTP server for a consistency model (OpenAI Images API, native jobs, /metrics),
// batching requests at any sampling step into shared UNet calls (docs/server.md).
#include <fcntl.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>

#include "cm/config.h"
#include "cm/dtype.h"
#include "cm/error.h"
#include "cm/hub.h"
#include "cm/pipeline.h"
#include "cm/server.h"
#include "cm/tuning.h"
#include "common.h"
#include "hub_progress.h"
#include "server/http_server.h"
#include "subcommands.h"

namespace cm::cli {
namespace {

namespace fs = std::filesystem;

// SIGINT/SIGTERM: the first is written to a pipe the main thread reads; a second exits at once.
// A handler rather than sigwait: threads that exist before cm serve runs (OpenBLAS's, created
// when the library was loaded) do not block the signals, and any thread may receive them.
int stop_pipe[2] = {-1, -1};
std::atomic<int> stop_signals_seen{0};

extern "C" void on_stop_signal(int signal) {
  if (stop_signals_seen.fetch_add(1) > 0) {
    static const char kMessage[] = "cm serve: second signal: exiting now\n";
    (void)!::write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
    ::_exit(128 + signal);
  }
  const unsigned char byte = static_cast<unsigned char>(signal);
  (void)!::write(stop_pipe[1], &byte, 1);
}

void install_stop_handlers() {
  if (::pipe2(stop_pipe, O_CLOEXEC) != 0) throw Error("cm serve: cannot create a pipe");
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
}

int wait_for_stop_signal() {
  unsigned char byte = 0;
  while (::read(stop_pipe[0], &byte, 1) != 1) {
    if (errno != EINTR) return SIGTERM;
  }
  return byte;
}

struct ServeArgs {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;
  std::string api_key_file;
  std::vector<std::string> cors_origins;
  double request_timeout = 600;
  double shutdown_grace = 30;
  int keep_alive = 15;
  std::string dtype = "float32";
  std::string variant;
  bool winograd = false;
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
  if (!(a.request_timeout >= 0))
    throw Error("--request-timeout: must not be negative (0: none), got " +
                std::to_string(a.request_timeout));
  if (!(a.shutdown_grace >= 0))
    throw Error("--shutdown-grace: must not be negative, got " + std::to_string(a.shutdown_grace));
  if (a.keep_alive < 1)
    throw Error("--sse-keep-alive: must be at least 1 second, got " + std::to_string(a.keep_alive));
  if (!a.api_key.empty() && !a.api_key_file.empty())
    throw Error("--api-key-file: give either --api-key or --api-key-file");
}

// The key from --api-key-file: its first line, without surrounding white space.
std::string read_api_key(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("--api-key-file: cannot read " + path);
  std::string line;
  std::getline(in, line);
  const auto first = line.find_first_not_of(" \t\r\n");
  const auto last = line.find_last_not_of(" \t\r\n");
  if (first == std::string::npos) throw Error("--api-key-file: " + path + " holds no key");
  return line.substr(first, last - first + 1);
}

int run_serve(const ServeArgs& a) {
  check_flags(a);
  LoadOptions load;
  load.device = parse_device(a.device);
  load.dtype = choose_dtype(a.dtype, load.device);
  load.variant = a.variant;
  apply_winograd(a.winograd, load);
  const std::string model = model_or_default(a.model);
  if (a.model.empty() && !fs::exists(model))
    throw Error("no -m given and the default model " + model + " is missing");

  // The threads cm serve starts (HTTP, engine, OpenMP) block SIGINT and SIGTERM, so that none is
  // interrupted mid-request; the main thread unblocks them once it waits for them.
  install_stop_handlers();
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  server::HttpOptions http;
  http.host = a.host;
  http.port = a.port;
  http.api_key = a.api_key_file.empty() ? a.api_key : read_api_key(a.api_key_file);
  http.cors_origins = a.cors_origins;
  http.keep_alive_seconds = a.keep_alive;
  http.model_id = model;
  http.max_n = a.max_n;
  http.quiet = a.quiet;
  http.http_threads = a.max_queue + 8;  // every queued synchronous request holds a connection
  server::HttpServer front(http);
  front.start();  // /health answers 503 while the model loads
  log(a.quiet, "listening on http://" + a.host + ":" + std::to_string(a.port));
  const bool loopback = a.host == "127.0.0.1" || a.host == "localhost" || a.host == "::1";
  if (!loopback && http.api_key.empty())
    std::cerr << "warning: listening on " << a.host << " without --api-key: anyone who can reach "
              << "this address can use the server" << std::endl;

  set_threads(a.threads);
  const std::string folder = resolve_model(model, hub_options(a.variant, a.quiet));
  // Loaded on a thread that then ends, taking its OpenMP team with it. A team left on the main
  // thread made libgomp count more OpenMP threads than cores, and then its workers stop spinning
  // between parallel loops almost at once: each batch's call took ~50% longer (docs/server.md).
  std::unique_ptr<ConsistencyModelPipeline> loaded;
  std::exception_ptr load_error;
  std::thread([&] {
    try {
      adapt_cpu_threads();
      loaded = std::make_unique<ConsistencyModelPipeline>(
          ConsistencyModelPipeline::from_pretrained(folder, load));
    } catch (...) {
      load_error = std::current_exception();
    }
  }).join();
  if (load_error) std::rethrow_exception(load_error);
  ConsistencyModelPipeline& pipe = *loaded;
  memory_policy_for_running();
  server::EngineOptions engine_options;
  engine_options.max_batch = a.max_batch;
  engine_options.batch_wait_ms = a.batch_wait_ms;
  engine_options.max_queue = a.max_queue;
  engine_options.threads = a.threads > 0 ? a.threads : 0;
  engine_options.keep_finished = static_cast<size_t>(a.keep_jobs);
  engine_options.request_timeout = a.request_timeout;
  server::BatchEngine engine(pipe, engine_options);

  const UNetConfig& config = pipe.unet()->config();
  server::ModelInfo info;
  info.id = model;
  info.sample_size = config.sample_size;
  info.channels = config.out_channels;
  info.num_classes = config.num_class_embeds;
  info.class_names = read_class_names(folder);
  info.num_train_timesteps = pipe.scheduler().config().num_train_timesteps;
  info.sigma_min = pipe.scheduler().config().sigma_min;
  info.sigma_max = pipe.scheduler().config().sigma_max;
  info.dtype = dtype_name(load.dtype);  // as cm generate writes it into the PNG text
  info.winograd = load.winograd && load.dtype == at::kFloat;
  front.set_ready(&engine, info);
  log(a.quiet, "ready: " + model);

  pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr);
  const int signal = wait_for_stop_signal();
  log(a.quiet, std::string("stopping (") + (signal == SIGINT ? "SIGINT" : "SIGTERM") +
                   "): finishing the requests in flight");
  front.begin_shutdown();
  const auto grace = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(a.shutdown_grace));
  if (!engine.drain(std::chrono::steady_clock::now() + grace))
    log(a.quiet, "the shutdown grace period ended: unfinished requests were cancelled");
  front.stop();
  return 0;
}

}  // namespace

Runner add_serve(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  app.add_option("-m,--model", args->model,
                 "diffusers pipeline folder (or a UNet folder), or a Hugging Face Hub repository "
                 "id org/name[@revision] (default: the shipped Fashion-MNIST model)")
      ->check(not_empty());
  app.add_option("--host", args->host, "address to listen on (loopback unless told otherwise)")
      ->capture_default_str();
  app.add_option("--port", args->port, "TCP port")->capture_default_str();
  app.add_option("--api-key", args->api_key,
                 "require this key (Authorization: Bearer KEY or X-Api-Key) except on /health "
                 "and /v1/models");
  app.add_option("--api-key-file", args->api_key_file,
                 "read the key from this file's first line (keeps it out of the process list)");
  app.add_option("--cors-origins", args->cors_origins,
                 "origins allowed cross-origin access, e.g. https://example.org (* for any); none "
                 "by default")
      ->delimiter(',');
  app.add_option("--request-timeout", args->request_timeout,
                 "seconds a request may take from admission; then it fails (504). 0: no limit")
      ->capture_default_str();
  app.add_option("--shutdown-grace", args->shutdown_grace,
                 "seconds SIGTERM/SIGINT waits for requests in flight before cancelling them")
      ->capture_default_str();
  app.add_option("--sse-keep-alive", args->keep_alive,
                 "seconds between keep-alive comments on an idle event stream")
      ->capture_default_str();
  app.add_option("--max-batch", args->max_batch, "images per UNet call")->capture_default_str();
  app.add_option(
         "--batch-wait-ms", args->batch_wait_ms,
         "with no images in flight, wait up to this long (from the first waiting request or the "
         "last call's end) for more requests to fill a call")
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
  app.add_option("--dtype", args->dtype,
                 "float32 (exact), bfloat16, float16, or auto (bfloat16 where the CPU or GPU "
                 "computes it natively, else float32)")
      ->capture_default_str();
  app.add_option("--device", args->device, "cpu, cuda or cuda:N")->capture_default_str();
  add_winograd_flag(app, args->winograd);
  app.add_option(
      "-t,--threads", args->threads,
      "CPU threads (default 0: the cores other processes leave free, checked before each "
      "network call)");
  app.add_flag("-q,--quiet", args->quiet, "no progress output on stderr");
  return [args] { return run_serve(*args); };
}

}  // namespace cm::cli
