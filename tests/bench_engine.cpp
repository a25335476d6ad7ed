// The batching engine alone, without HTTP: closed-loop client threads in this process submit
// one-image, one-step requests and wait for them, for a fixed time. Compares with `cm bench` (the
// pipeline alone) and `scripts/bench_serve.py` (the whole server) to tell the engine's cost from
// the HTTP side's. Built with the tests, not run by CTest (timings are not tested).
//   build/tests/bench_engine MODEL [clients=16] [threads=2] [seconds=10] [batch_wait_ms=0]
//                            [think_ms=0]
// (think_ms: each client pauses this long between its requests, as an HTTP round trip does)
// (threads 0: adaptive, as cm serve's default)
// (It tunes OpenBLAS and the allocator as `cm` does, cm/tuning.h.)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "cm/server.h"
#include "cm/tuning.h"

namespace {

int integer_arg(const char* text, const char* name, int min) {
  try {
    size_t end = 0;
    const int v = std::stoi(text, &end);
    if (end == std::string(text).size() && v >= min) return v;
  } catch (const std::exception&) {
  }
  std::fprintf(stderr, "bench_engine: %s: expected an integer >= %d, got '%s'\n", name, min, text);
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  cm::tune_blas();
  cm::memory_policy_for_loading();
  using namespace cm::server;
  using Clock = std::chrono::steady_clock;
  if (argc < 2 || argc > 7) {
    std::fprintf(stderr,
                 "usage: bench_engine MODEL [clients=16] [threads=2] [seconds=10] "
                 "[batch_wait_ms=0] [think_ms=0]\n");
    return 1;
  }
  const int clients = argc > 2 ? integer_arg(argv[2], "clients", 1) : 16;
  const int threads = argc > 3 ? integer_arg(argv[3], "threads", 0) : 2;
  const int seconds = argc > 4 ? integer_arg(argv[4], "seconds", 1) : 10;
  const int wait_ms = argc > 5 ? integer_arg(argv[5], "batch_wait_ms", 0) : 0;
  const int think_ms = argc > 6 ? integer_arg(argv[6], "think_ms", 0) : 0;
  try {
    auto pipeline = cm::ConsistencyModelPipeline::from_pretrained(argv[1]);
    cm::memory_policy_for_running();
    EngineOptions options;
    cm::set_cpu_threads(threads);
    options.threads = threads;
    options.batch_wait_ms = wait_ms;
    options.max_queue = clients + 1;
    BatchEngine engine(pipeline, options);
    std::atomic<bool> counting{false}, stop{false};
    std::atomic<long> images{0}, submit_ns{0}, submits{0};
    std::vector<std::thread> pool;
    std::vector<std::vector<double>> latencies(static_cast<size_t>(clients));  // ms, per client
    for (int c = 0; c < clients; ++c)
      pool.emplace_back([&, c] {
        uint64_t seed = static_cast<uint64_t>(c) << 32;
        while (!stop) {
          ImageRequest r;
          r.seed = ++seed;
          const auto begin = Clock::now();
          const uint64_t id = engine.submit(r);
          if (counting) {
            submit_ns +=
                std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - begin).count();
            ++submits;
          }
          engine.wait(id);
          engine.forget(id);
          if (think_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(think_ms));
          if (counting) {
            ++images;
            latencies[static_cast<size_t>(c)].push_back(
                std::chrono::duration<double, std::milli>(Clock::now() - begin).count());
          }
        }
      });
    std::this_thread::sleep_for(std::chrono::seconds(2));  // warm-up, not counted
    const EngineStats before = engine.stats();
    counting = true;
    const auto start = Clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    counting = false;
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    const EngineStats after = engine.stats();
    stop = true;
    for (auto& t : pool) t.join();
    std::vector<double> all;
    for (const auto& mine : latencies) all.insert(all.end(), mine.begin(), mine.end());
    std::sort(all.begin(), all.end());
    auto percentile = [&all](double q) {  // nearest rank
      if (all.empty()) return 0.0;
      const auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(all.size())));
      return all[std::max<size_t>(rank, 1) - 1];
    };
    const double calls = static_cast<double>(after.batch_size.count - before.batch_size.count);
    const double batched = after.batch_size.sum - before.batch_size.sum;
    const double busy = after.busy_seconds - before.busy_seconds;
    std::printf(
        "clients %d, threads %d, batch wait %d ms: %.1f images/s, %.0f calls, %.2f images per "
        "call, engine busy %.0f%%, %.2f ms per image computing, submit %.3f ms per request; "
        "latency p50 %.1f / p95 %.1f / p99 %.1f ms\n",
        clients, threads, wait_ms, images / elapsed, calls, calls > 0 ? batched / calls : 0.0,
        100 * busy / elapsed, batched > 0 ? 1000 * busy / batched : 0.0,
        submits > 0 ? submit_ns / 1e6 / submits : 0.0, percentile(0.50), percentile(0.95),
        percentile(0.99));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_engine: %s\n", e.what());
    return 1;
  }
  return 0;
}
