// cm bench: random-weight models of the published architectures (or any folder), timed over a
// grid of batch sizes, step counts, dtypes and thread counts, against the convolution peak
// measured in the same run.
#include <ATen/Parallel.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "bench/bench_util.h"
#include "cm/bench.h"
#include "cm/error.h"
#include "cm/pipeline.h"
#include "cm/tuning.h"

namespace cm {

namespace fs = std::filesystem;

bench_util::BenchPipeline bench_util::load_bench_pipeline(const std::string& model,
                                                          const LoadOptions& load) {
  BenchPipeline out;
  if (fs::is_directory(model)) {
    const auto t = Clock::now();
    out.pipe = std::make_unique<ConsistencyModelPipeline>(
        ConsistencyModelPipeline::from_pretrained(model, load));
    out.load_s = seconds_since(t);
    return out;
  }
  torch::manual_seed(0);
  UNet2DModel unet(bench_architecture(model));
  unet->to(load.device, load.dtype);
  if (load.winograd && load.device.is_cpu()) unet->use_winograd(true);
  const auto t = Clock::now();
  out.pipe = std::make_unique<ConsistencyModelPipeline>(unet, CMStochasticIterativeScheduler());
  out.load_s = seconds_since(t);
  return out;
}

namespace {

using bench_util::Clock;
using bench_util::dtype_of;
using bench_util::median;
using bench_util::resolve_threads;
using bench_util::seconds_since;

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;  // kB on Linux
}

// Seconds since this process started: /proc/self/stat's start time (field 22, clock ticks after
// boot) against the boot-time clock. 10 ms resolution.
double process_age_s() {
  std::ifstream in("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i) {
  }
  timespec now{};
  clock_gettime(CLOCK_BOOTTIME, &now);
  const double start = std::stod(field) / static_cast<double>(sysconf(_SC_CLK_TCK));
  return now.tv_sec + now.tv_nsec * 1e-9 - start;
}

// A child process that keeps one core busy until destroyed (cm bench --contended): what a build
// or another program running next to cm does to OpenMP's barriers.
class BusySibling {
 public:
  BusySibling() {
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives the benchmark
      volatile unsigned long spin = 0;
      for (;;) spin = spin + 1;
    }
    if (pid_ < 0) throw Error("--contended: fork failed");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // running before timing starts
  }
  ~BusySibling() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  BusySibling(const BusySibling&) = delete;
  BusySibling& operator=(const BusySibling&) = delete;

 private:
  pid_t pid_ = -1;
};

UNetConfig tiny(bool conditional) {
  UNetConfig c;
  c.sample_size = 32;
  c.attention_head_dim = conditional ? 8 : 16;
  c.downsample_type = c.upsample_type = "resnet";
  if (conditional) {
    c.block_out_channels = {32, 64};
    c.down_block_types = {"ResnetDownsampleBlock2D", "AttnDownBlock2D"};
    c.up_block_types = {"AttnUpBlock2D", "ResnetUpsampleBlock2D"};
    c.attn_norm_num_groups = 32;
    c.num_class_embeds = 1000;
    c.resnet_time_scale_shift = "scale_shift";
  } else {
    c.block_out_channels = {32, 32, 64};
    c.down_block_types = {"ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "AttnDownBlock2D"};
    c.up_block_types = {"AttnUpBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"};
  }
  return c;
}

}  // namespace

std::vector<std::string> bench_architectures() {
  return {"imagenet64", "lsun256", "tiny_cond", "tiny_uncond"};
}

UNetConfig bench_architecture(const std::string& name) {
  if (fs::is_directory(name))
    return UNetConfig::load((fs::path(unet_folder(name)) / "config.json").string());
  UNetConfig c;
  c.downsample_type = c.upsample_type = "resnet";
  c.attention_head_dim = 64;
  if (name == "imagenet64") {
    c.sample_size = 64;
    c.layers_per_block = 3;
    c.num_class_embeds = 1000;
    c.block_out_channels = {192, 384, 576, 768};
    c.down_block_types = {"ResnetDownsampleBlock2D", "AttnDownBlock2D", "AttnDownBlock2D",
                          "AttnDownBlock2D"};
    c.up_block_types = {"AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"};
    c.resnet_time_scale_shift = "scale_shift";
    c.attn_norm_num_groups = 32;
  } else if (name == "lsun256") {
    c.sample_size = 256;
    c.layers_per_block = 2;
    c.block_out_channels = {256, 256, 512, 512, 1024, 1024};
    c.down_block_types = {"ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D",
                          "ResnetDownsampleBlock2D", "AttnDownBlock2D",
                          "AttnDownBlock2D",         "AttnDownBlock2D"};
    c.up_block_types = {"AttnUpBlock2D",         "AttnUpBlock2D",         "AttnUpBlock2D",
                        "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"};
  } else if (name == "tiny_cond" || name == "tiny_uncond") {
    c = tiny(name == "tiny_cond");
  } else {
    std::string known;
    for (const auto& n : bench_architectures()) known += (known.empty() ? "" : ", ") + n;
    throw Error("unknown architecture '" + name + "' (" + known + ", or a model folder)");
  }
  c.validate(name);
  return c;
}

void save_random_pipeline(const UNetConfig& config, const std::string& dir, uint64_t seed) {
  torch::manual_seed(seed);
  UNet2DModel unet(config);
  save_pretrained(dir, unet, SchedulerConfig{});
}

namespace {

// The backend's peak: a 256→256 3×3 NHWC convolution on 64×64 (4.8 GFLOP), the layout the
// pipeline runs in. At 64×64 its 4 MB output stays below cm's 8 MB mmap threshold, so a sample
// times the convolution rather than page faults; the best of three calls per sample.
class ConvPeakProbe {
 public:
  explicit ConvPeakProbe(at::ScalarType type) {
    torch::InferenceMode guard;
    x_ = at::randn({1, 256, 64, 64}).to(type).contiguous(at::MemoryFormat::ChannelsLast);
    w_ = (at::randn({256, 256, 3, 3}) * 0.02).to(type).contiguous(at::MemoryFormat::ChannelsLast);
    sample();  // oneDNN primitive creation
  }
  double sample() const {
    torch::InferenceMode guard;
    double best = 1e30;
    for (int i = 0; i < 3; ++i) {
      const auto t = Clock::now();
      const auto y = at::conv2d(x_, w_, {}, 1, 1);
      best = std::min(best, seconds_since(t));
    }
    return 2.0 * 256 * 256 * 9 * 64 * 64 / best / 1e9;
  }

 private:
  at::Tensor x_, w_;
};

}  // namespace

double measure_conv_peak_gflops(const std::string& dtype, int threads) {
  at::set_num_threads(resolve_threads(threads));
  const ConvPeakProbe probe(dtype_of(dtype));
  std::vector<double> samples;
  for (int i = 0; i < 6; ++i) samples.push_back(probe.sample());
  return median(samples);
}

#if CM_CUDA
std::vector<BenchRow> run_cuda_bench(const BenchOptions& o);  // src/bench/cuda_bench.cpp
#else
double measure_gpu_matmul_peak_gflops(const std::string&, const std::string&) {
  throw Error("--device cuda: this cm was built without CUDA (see scripts/build.sh --cuda)");
}
#endif

std::vector<BenchRow> run_bench(const BenchOptions& o) {
  if (o.device != "cpu") {
#if CM_CUDA
    return run_cuda_bench(o);
#else
    throw Error("--device " + o.device +
                ": this cm was built without CUDA (see scripts/build.sh --cuda)");
#endif
  }
  const double process_start_s = process_age_s();
  std::vector<BenchRow> rows;
  for (const auto& model : o.models) {
    for (const auto& dtype : o.dtypes) {
      for (int threads : o.threads) {
        const int nt = resolve_threads(threads);
        set_cpu_threads(nt);  // the peak probe: every core asked for
        if (o.before_load) o.before_load();
        const ConvPeakProbe probe(dtype_of(dtype));
        set_cpu_threads(threads);
        for (const bool winograd : o.winograd) {
          // Winograd rows only where it changes something: float32 on a CPU that has the kernel.
          if (winograd && (dtype_of(dtype) != at::kFloat || !winograd_supported())) continue;
          LoadOptions load;
          load.dtype = dtype_of(dtype);
          load.winograd = winograd;
          auto [pipe, load_s] = bench_util::load_bench_pipeline(model, load);
          if (o.after_load) o.after_load();
          const double gflop = count_unet_flops(pipe->unet()->config()).total() / 1e9;
          for (int batch : o.batch_sizes) {
            for (int steps : bench_util::step_counts(o)) {
              bool first = true;
              for (bool contended : o.contended) {
                GenerateOptions g;
                g.batch_size = batch;
                g.num_inference_steps = steps;
                g.timesteps = o.timesteps;
                g.seed = 0;
                BenchRow r;
                r.model = model;
                r.dtype = dtype;
                r.batch = batch;
                r.steps = steps;
                r.timesteps = o.timesteps;
                r.threads = threads;
                r.contended = contended;
                r.winograd = winograd;
                r.process_start_s = process_start_s;
                r.load_s = load_s;
                std::unique_ptr<BusySibling> sibling;
                if (contended) sibling = std::make_unique<BusySibling>();
                auto t = Clock::now();
                (*pipe)(g);
                r.first_call_s = first ? seconds_since(t) : -1;  // later rows: a warm-up call
                first = false;
                // This machine's speed drifts by ±30% over seconds (a shared virtual machine): each
                // timed call is followed by a peak sample, and the fraction is the median of the
                // per-call ratios, so a slow spell slows both sides of a ratio alike.
                std::vector<double> times, peaks, fractions;
                const double flop_per_call = gflop * steps * batch;
                for (int i = 0; i < std::max(1, o.repetitions); ++i) {
                  t = Clock::now();
                  (*pipe)(g);
                  times.push_back(seconds_since(t));
                  peaks.push_back(probe.sample());
                  fractions.push_back(flop_per_call / times.back() / peaks.back());
                }
                const double per_batch = median(times);
                r.ms_per_image = per_batch / batch * 1e3;
                r.images_per_s = batch / per_batch;
                r.gflop_per_image = gflop * steps;
                r.achieved_gflops = r.gflop_per_image * r.images_per_s;
                r.peak_gflops = median(peaks);
                r.fraction_of_peak = median(fractions);
                r.peak_rss_mb = peak_rss_mb();
                rows.push_back(r);
              }
            }
          }
        }
      }
    }
  }
  return rows;
}

namespace {

// CUDA rows: device and graphs instead of threads, the matmul peak, the GPU's peak memory.
std::string cuda_markdown(const std::vector<BenchRow>& rows) {
  std::ostringstream s;
  s << "| model | device | dtype | batch | steps | graphs | first call s | ms/image | images/s | "
       "GFLOP/image | TFLOP/s | matmul peak TFLOP/s | of peak | peak GPU MB |\n";
  s << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  char buf[512];
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf,
                  "| %s | %s | %s | %d | %d | %s | %.3f | %.2f | %.1f | %.1f | %.1f | %.0f | "
                  "%.1f%% | %.0f |\n",
                  r.model.c_str(), r.device.c_str(), r.dtype.c_str(), r.batch, r.steps,
                  r.cuda_graphs ? "on" : "off", r.first_call_s, r.ms_per_image, r.images_per_s,
                  r.gflop_per_image, r.achieved_gflops / 1e3, r.peak_gflops / 1e3,
                  100 * r.fraction_of_peak, r.peak_gpu_mem_mb);
    s << buf;
  }
  return s.str();
}

}  // namespace

std::string bench_markdown(const std::vector<BenchRow>& rows) {
  if (!rows.empty() && rows.front().device != "cpu") return cuda_markdown(rows);
  std::ostringstream s;
  bool any_contended = false;
  bool any_winograd = false;
  for (const auto& r : rows) any_contended = any_contended || r.contended;
  for (const auto& r : rows) any_winograd = any_winograd || r.winograd;
  s << "| model | dtype | threads | batch | steps |" << (any_contended ? " busy sibling |" : "")
    << (any_winograd ? " winograd |" : "")
    << " start s | load s | first call s | ms/image | images/s | "
       "GFLOP/image | GFLOP/s | peak GFLOP/s | of peak | peak RSS MB |\n";
  s << "|---|---|---|---|---|" << (any_contended ? "---|" : "") << (any_winograd ? "---|" : "")
    << "---|---|---|---|---|---|---|---|---|---|\n";
  auto seconds = [](double v) {
    if (v < 0) return std::string("–");
    char b[32];
    std::snprintf(b, sizeof b, "%.3f", v);
    return std::string(b);
  };
  char buf[512];
  for (const auto& r : rows) {
    const std::string threads = r.threads == 0 ? "auto" : std::to_string(r.threads);
    std::snprintf(
        buf, sizeof buf,
        "| %s | %s | %s | %d | %d |%s%s %s | %s | %s | %.1f | %.2f | %.1f | %.1f | %.1f | "
        "%.0f%% | %.0f |\n",
        r.model.c_str(), r.dtype.c_str(), threads.c_str(), r.batch, r.steps,
        any_contended ? (r.contended ? " yes |" : " no |") : "",
        any_winograd ? (r.winograd ? " yes |" : " no |") : "", seconds(r.process_start_s).c_str(),
        seconds(r.load_s).c_str(), seconds(r.first_call_s).c_str(), r.ms_per_image, r.images_per_s,
        r.gflop_per_image, r.achieved_gflops, r.peak_gflops, 100 * r.fraction_of_peak,
        r.peak_rss_mb);
    s << buf;
  }
  return s.str();
}

std::string bench_json(const std::vector<BenchRow>& rows) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& r : rows) {
    j.push_back({{"model", r.model},
                 {"device", r.device},
                 {"dtype", r.dtype},
                 {"timesteps", r.timesteps},
                 {"cuda_graphs", r.cuda_graphs},
                 {"peak_gpu_mem_mb", r.peak_gpu_mem_mb},
                 {"threads", r.threads},
                 {"contended", r.contended},
                 {"winograd", r.winograd},
                 {"process_start_s", r.process_start_s},
                 {"batch", r.batch},
                 {"steps", r.steps},
                 {"load_s", r.load_s},
                 {"first_call_s", r.first_call_s},
                 {"ms_per_image", r.ms_per_image},
                 {"images_per_s", r.images_per_s},
                 {"gflop_per_image", r.gflop_per_image},
                 {"achieved_gflops", r.achieved_gflops},
                 {"peak_gflops", r.peak_gflops},
                 {"fraction_of_peak", r.fraction_of_peak},
                 {"peak_rss_mb", r.peak_rss_mb}});
  }
  return j.dump(2) + "\n";
}

}  // namespace cm
