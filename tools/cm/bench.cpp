// cm bench: speed against the machine's own convolution peak, measured in the same run.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>

#include "cm/bench.h"
#include "cm/error.h"
#include "cm/tuning.h"
#include "common.h"
#include "subcommands.h"
#if CM_SERVER
#include "server/load_test.h"
#endif

namespace cm::cli {

Runner add_bench(CLI::App& app) {
  struct Args {
    BenchOptions o;
    std::string models = "imagenet64", batches = "1", steps = "1", dtypes = "float32",
                threads = "0", save, timesteps, graphs = "on";
    bool json = false, flops = false, kernels = false, contended = false, winograd = false;
    std::string serve, concurrency = "1,4,16,64", api_key;
    double duration = 20, warmup = -1;
  };
  auto a = std::make_shared<Args>();
  app.add_option("-m,--model", a->models,
                 "comma-separated: imagenet64, lsun256, tiny_cond, tiny_uncond or model folders")
      ->capture_default_str();
  app.add_option("-b,--batch-size", a->batches, "comma-separated batch sizes")
      ->capture_default_str();
  app.add_option("--steps", a->steps, "comma-separated step counts")->capture_default_str();
  app.add_option("--dtype", a->dtypes, "comma-separated: float32, bfloat16, float16")
      ->capture_default_str();
  app.add_option("-t,--threads", a->threads,
                 "comma-separated thread counts (0: adaptive, the cores other processes leave "
                 "free)")
      ->capture_default_str();
  app.add_option("-r,--repetitions", a->o.repetitions, "timed runs per row (median)")
      ->capture_default_str()
      ->check(at_least(1));
  app.add_option("--device", a->o.device, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--timesteps", a->timesteps,
                 "explicit descending timesteps, e.g. 17,0 (instead of --steps)");
  app.add_option("--cuda-graphs", a->graphs, "CUDA: on, off or both")->capture_default_str();
  app.add_option("--save", a->save,
                 "write the (first) architecture as a random-weight pipeline "
                 "folder to DIR and exit");
  app.add_flag("--flops", a->flops, "print the FLOP count of one forward and exit");
  app.add_flag("--kernels", a->kernels,
               "time each fused CPU kernel against the plain ops it replaces (uses --dtype, the "
               "first --threads, --repetitions) and exit");
  app.add_flag("--contended", a->contended,
               "CPU: time each row idle, then again while a sibling process keeps one core busy");
  app.add_flag("--winograd", a->winograd,
               "CPU float32: time each row with direct convolutions, then with oneDNN's "
               "Winograd ones (AVX-512 CPUs)");
  app.add_flag("--json", a->json, "JSON instead of a markdown table");
#if CM_SERVER
  app.add_option("--serve", a->serve,
                 "load-test a running cm serve at URL instead (closed-loop clients; --steps are "
                 "cycled, 1,2 for a mix; docs/server.md)");
  app.add_option("--concurrency", a->concurrency, "--serve: comma-separated client counts")
      ->capture_default_str();
  app.add_option("--duration", a->duration, "--serve: counted seconds per level")
      ->capture_default_str();
  app.add_option("--warmup", a->warmup,
                 "--serve: seconds run before each level, not counted (default min(5, "
                 "duration/4))");
  app.add_option("--api-key", a->api_key, "--serve: sent as Authorization: Bearer KEY");
#endif
  return [a] {
    auto split = [](const std::string& s) {
      std::vector<std::string> out;
      size_t start = 0;
      while (start <= s.size()) {
        const size_t end = s.find(',', start);
        out.push_back(s.substr(start, end == std::string::npos ? end : end - start));
        if (end == std::string::npos) break;
        start = end + 1;
      }
      return out;
    };
    auto ints = [&](const char* opt, const std::string& s) {
      std::vector<int> out;
      for (auto v : parse_int_list(opt, s)) out.push_back(static_cast<int>(v));
      return out;
    };
#if CM_SERVER
    if (!a->serve.empty()) {
      server::LoadTestOptions lo;
      lo.url = a->serve;
      lo.concurrency = ints("--concurrency", a->concurrency);
      lo.steps = ints("--steps", a->steps);
      lo.duration_s = a->duration;
      lo.warmup_s = a->warmup;
      lo.api_key = a->api_key;
      const auto rows = server::run_load_test(lo, [](const server::LoadTestRow& r) {
        std::fprintf(stderr, "concurrency %d: %.2f images/s, %lld errors%s%s\n", r.concurrency,
                     r.images_per_s, static_cast<long long>(r.errors),
                     r.first_error.empty() ? "" : "; first: ", r.first_error.c_str());
      });
      std::fputs((a->json ? server::load_test_json(lo, rows) : server::load_test_markdown(lo, rows))
                     .c_str(),
                 stdout);
      for (const auto& r : rows)
        if (r.errors > 0) return 1;
      return 0;
    }
#endif
    a->o.models = split(a->models);
    a->o.batch_sizes = ints("--batch-size", a->batches);
    a->o.steps = ints("--steps", a->steps);
    a->o.dtypes = split(a->dtypes);
    a->o.threads = ints("--threads", a->threads);
    if (!a->timesteps.empty()) a->o.timesteps = parse_int_list("--timesteps", a->timesteps);
    if (a->graphs == "on") {
      a->o.cuda_graphs = {true};
    } else if (a->graphs == "off") {
      a->o.cuda_graphs = {false};
    } else if (a->graphs == "both") {
      a->o.cuda_graphs = {true, false};
    } else {
      throw Error("--cuda-graphs: unknown value '" + a->graphs + "' (on, off, both)");
    }
    if (a->contended) a->o.contended = {false, true};
    if (a->winograd) {
      winograd_or_warn();  // the Winograd rows are then left out
      a->o.winograd = {false, true};
    }
    for (int t : a->o.threads)
      if (t < 0) throw Error("-t/--threads: must be at least 0, got " + std::to_string(t));
    if (a->flops) {
      for (const auto& m : a->o.models) {
        const auto f = count_unet_flops(bench_architecture(m));
        std::printf("%s: %.2f GFLOP (conv %.2f, linear %.2f, attention %.2f)\n", m.c_str(),
                    f.total() / 1e9, f.conv / 1e9, f.linear / 1e9, f.attention / 1e9);
      }
      return 0;
    }
    if (a->kernels) {
      memory_policy_for_running();  // as in generation after the first call: no page faults
      const auto rows = run_kernel_bench(a->o.dtypes, a->o.threads.front(), a->o.repetitions);
      std::fputs((a->json ? kernel_bench_json(rows) : kernel_bench_markdown(rows)).c_str(), stdout);
      return 0;
    }
    if (!a->save.empty()) {
      save_random_pipeline(bench_architecture(a->o.models.front()), a->save);
      std::printf("%s\n", a->save.c_str());
      return 0;
    }
    a->o.before_load = memory_policy_for_loading;
    a->o.after_load = memory_policy_for_running;
    const auto rows = run_bench(a->o);
    std::fputs((a->json ? bench_json(rows) : bench_markdown(rows)).c_str(), stdout);
    return 0;
  };
}

}  // namespace cm::cli
