// A closed-loop load test of a running `cm serve` (cm bench --serve URL): C clients each send
// POST /v1/images/generations one after another on a kept-alive connection, first for a warm-up
// that is not counted, then for a counted window; per concurrency level the images/s, latency
// percentiles and, from the server's /metrics over the window, its UNet calls, images per call and
// the share of the window its engine was computing. Written in C++ so that the load generator,
// when it shares the server's cores, costs them little (scripts/bench_serve.py does the same in
// Python, at several times the CPU per request).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace cm::server {

struct LoadTestOptions {
  std::string url = "http://127.0.0.1:8080";  // http://HOST[:PORT][/PREFIX]
  std::vector<int> concurrency = {1, 4, 16, 64};
  double duration_s = 20;        // counted seconds per level
  double warmup_s = -1;          // seconds run and not counted first; <0: min(5, duration / 4)
  std::vector<int> steps = {1};  // sampling steps per request, cycled (1,2: half and half)
  int n = 1;                     // images per request
  int classes = -1;              // classes to cycle through; -1: the model's, from /v1/models
  std::string api_key;           // sent as Authorization: Bearer KEY
  double timeout_s = 600;        // one request's limit
};

struct LoadTestRow {
  int concurrency = 0;
  double seconds = 0;  // the counted window
  int64_t requests = 0, errors = 0;
  double requests_per_s = 0, images_per_s = 0;
  double p50_s = 0, p95_s = 0, p99_s = 0;  // latency of the answered requests (nan: none)
  double unet_calls = 0, images_per_call = 0, engine_busy = 0;  // nan when /metrics lacks them
  std::string first_error;                                      // empty: none
};

// Runs every level in turn; `on_row` (optional) sees each row as it is measured. Throws cm::Error
// when the server is not ready (/health) or its /metrics cannot be read.
std::vector<LoadTestRow> run_load_test(const LoadTestOptions& options,
                                       const std::function<void(const LoadTestRow&)>& on_row = {});
std::string load_test_markdown(const LoadTestOptions& options,
                               const std::vector<LoadTestRow>& rows);
std::string load_test_json(const LoadTestOptions& options, const std::vector<LoadTestRow>& rows);

}  // namespace cm::server
