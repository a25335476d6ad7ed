// cm bench --kernels: each hand-fused kernel of src/kernels against the plain ATen ops it
// replaces, on activation shapes of the built-in architectures, timed alternately in one run.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench/bench_util.h"
#include "cm/bench.h"
#include "cm/error.h"
#include "kernels/norm_act.h"
#include "kernels/softmax.h"

namespace cm {
namespace {

using bench_util::median;
using Clock = std::chrono::steady_clock;

std::string shape_of(const at::Tensor& t) {
  std::ostringstream s;
  for (int64_t i = 0; i < t.dim(); ++i) s << (i ? "×" : "") << t.size(i);
  return s.str();
}

struct Case {
  std::string kernel, note;
  at::Tensor input;
  std::function<at::Tensor()> plain, fused, reference;  // reference: in float64
};

// Both sides once to warm up, then `reps` alternating pairs; medians, and each side's largest
// difference from the float64 reference.
KernelBenchRow time_case(const Case& c, int reps, int threads) {
  KernelBenchRow r;
  r.kernel = c.kernel;
  r.shape = shape_of(c.input) + c.note;
  r.dtype = c10::toString(c.input.scalar_type());
  r.isa = kernels::isa_name(kernels::best_isa());
  r.threads = threads;
  const auto ref = c.reference();
  auto error = [&](const at::Tensor& t) { return (t.to(at::kDouble) - ref).abs().max().item<double>(); };
  r.plain_error = error(c.plain());
  r.fused_error = error(c.fused());
  std::vector<double> plain, fused;
  for (int i = 0; i < reps; ++i) {
    auto t0 = Clock::now();
    c.plain();
    auto t1 = Clock::now();
    c.fused();
    auto t2 = Clock::now();
    plain.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    fused.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
  }
  r.plain_ms = median(plain);
  r.fused_ms = median(fused);
  return r;
}

std::vector<Case> cases(at::ScalarType dtype) {
  std::vector<Case> out;
  const double eps = 1e-5;
  const int64_t groups = 32;
  // (channels, side): ImageNet-64's four levels, LSUN-256's full resolution and a middle one.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {192, 64}, {384, 32}, {768, 8}, {256, 256}, {512, 64}};
  for (const auto& [c, side] : shapes) {
    const auto x = at::randn({1, c, side, side}).to(dtype).contiguous(at::MemoryFormat::ChannelsLast);
    const auto w = at::rand({c}).to(dtype) + 0.5, b = at::rand({c}).to(dtype) - 0.5;
    out.push_back({"group_norm+silu", " NHWC", x,
                   [=] { return at::silu(at::group_norm(x, groups, w, b, eps)); },
                   [=] { return kernels::group_norm_act(x, groups, w, b, eps, true); },
                   [=] {
                     return at::silu(at::group_norm(x.to(at::kDouble), groups, w.to(at::kDouble),
                                                    b.to(at::kDouble), eps));
                   }});
  }
  {
    // The scale_shift ResNet chain: norm, ·(1 + s) + t, SiLU (ImageNet-64's second level).
    const auto x = at::randn({1, 384, 32, 32}).to(dtype).contiguous(at::MemoryFormat::ChannelsLast);
    const auto w = at::rand({384}).to(dtype) + 0.5, b = at::rand({384}).to(dtype) - 0.5;
    const auto s = at::randn({1, 384}).to(dtype) * 0.1, t = at::randn({1, 384}).to(dtype);
    out.push_back({"group_norm·(1+s)+t+silu", " NHWC", x,
                   [=] {
                     return at::silu(at::group_norm(x, groups, w, b, eps) *
                                         (1 + s.reshape({1, -1, 1, 1})) +
                                     t.reshape({1, -1, 1, 1}));
                   },
                   [=] {
                     // The affine formed in float32, as src/models/resnet.cpp does.
                     const auto f = [](const at::Tensor& v) { return v.to(at::kFloat); };
                     return kernels::group_norm_act(x, groups, f(w) * (1 + f(s)),
                                                    f(b) * (1 + f(s)) + f(t), eps, true);
                   },
                   [=] {
                     const auto d = [](const at::Tensor& v) { return v.to(at::kDouble); };
                     return at::silu(at::group_norm(d(x), groups, d(w), d(b), eps) *
                                         (1 + d(s).reshape({1, -1, 1, 1})) +
                                     d(t).reshape({1, -1, 1, 1}));
                   }});
  }
  {
    // One block of attention scores (64 query rows of 1024 tokens), and a whole 32×32 layer's.
    for (const int64_t rows : {64, 6 * 1024}) {
      const auto x = at::randn({rows, 1024}).to(dtype) * 4;
      out.push_back({"softmax (float32 math)", "", x,
                     [=] { return x.to(at::kFloat).softmax(-1).to(x.scalar_type()); },
                     [=] { return kernels::softmax_last_dim(x); },
                     [=] { return x.to(at::kDouble).softmax(-1); }});
    }
  }
  return out;
}

}  // namespace

std::vector<KernelBenchRow> run_kernel_bench(const std::vector<std::string>& dtypes, int threads,
                                             int repetitions) {
  if (repetitions < 1) throw Error("--repetitions: must be at least 1");
  const int nt = bench_util::resolve_threads(threads);
  at::set_num_threads(nt);
  at::NoGradGuard no_grad;
  std::vector<KernelBenchRow> rows;
  for (const auto& name : dtypes) {
    at::ScalarType dtype;
    if (name == "float32") {
      dtype = at::kFloat;
    } else if (name == "bfloat16") {
      dtype = at::kBFloat16;
    } else {
      throw Error("--dtype: the kernels take float32 and bfloat16, not '" + name + "'");
    }
    for (const auto& c : cases(dtype)) rows.push_back(time_case(c, repetitions, nt));
  }
  return rows;
}

std::string kernel_bench_markdown(const std::vector<KernelBenchRow>& rows) {
  std::ostringstream s;
  s << "| kernel | shape | dtype | isa | threads | plain ms | fused ms | speed-up | plain max err "
       "| fused max err |\n";
  s << "|---|---|---|---|---|---|---|---|---|---|\n";
  char buf[512];
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf,
                  "| %s | %s | %s | %s | %d | %.3f | %.3f | %.2f× | %.2g | %.2g |\n",
                  r.kernel.c_str(), r.shape.c_str(), r.dtype.c_str(), r.isa.c_str(), r.threads,
                  r.plain_ms, r.fused_ms, r.plain_ms / r.fused_ms, r.plain_error, r.fused_error);
    s << buf;
  }
  return s.str();
}

std::string kernel_bench_json(const std::vector<KernelBenchRow>& rows) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& r : rows) {
    j.push_back({{"kernel", r.kernel},
                 {"shape", r.shape},
                 {"dtype", r.dtype},
                 {"isa", r.isa},
                 {"threads", r.threads},
                 {"plain_ms", r.plain_ms},
                 {"fused_ms", r.fused_ms},
                 {"plain_max_error", r.plain_error},
                 {"fused_max_error", r.fused_error}});
  }
  return j.dump(2) + "\n";
}

}  // namespace cm
