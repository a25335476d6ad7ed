#include "kernels/norm_act.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace cm::kernels {
namespace {

// Channels-last and not also plain contiguous (a 1×1 image is both; its rows are the same).
bool is_nhwc(const at::Tensor& x) {
  return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// [C] or [N, C] as N·C float32 values, one row per sample.
std::vector<float> per_sample(const at::Tensor& t, int64_t n, int64_t c, const char* what) {
  TORCH_CHECK(t.numel() == c || t.numel() == n * c, "group_norm_act: ", what, " has ", t.numel(),
              " values, expected ", c, " or ", n * c);
  const auto f = t.to(at::kFloat).contiguous();
  const float* p = f.data_ptr<float>();
  std::vector<float> rows(n * c);
  for (int64_t r = 0; r < n * c; ++r) rows[r] = p[t.numel() == c ? r % c : r];
  return rows;
}

template <typename T>
void run(const at::Tensor& x, at::Tensor& y, int64_t groups, const std::vector<float>& weight,
         const std::vector<float>& bias, const std::vector<float>& offset, double eps, bool silu,
         Isa isa) {
  const int64_t n = x.size(0), c = x.size(1), hw = x.numel() / (n * c);
  const bool nhwc = is_nhwc(x);
  const T* xp = x.data_ptr<T>();
  T* yp = y.data_ptr<T>();

  // Each (sample, channel)'s sums are taken about its first value, so that the squares keep
  // their precision however far the mean is from zero.
  std::vector<float> shift(n * c);
  for (int64_t r = 0; r < n * c; ++r) {
    const int64_t i = r / c, ch = r % c;
    shift[r] = static_cast<float>(nhwc ? xp[i * hw * c + ch] : xp[r * hw]);
  }
  std::vector<double> sum(n * c, 0.0), sumsq(n * c, 0.0);
  if (nhwc) {
    // Pixels shared out over the threads, each adding into its own row of partial sums.
    const int64_t threads = at::get_num_threads();
    std::vector<double> part(threads * 2 * c);
    for (int64_t i = 0; i < n; ++i) {
      std::fill(part.begin(), part.end(), 0.0);
      const T* xs = xp + i * hw * c;
      at::parallel_for(0, hw, std::max<int64_t>(1, 16384 / c), [&](int64_t p0, int64_t p1) {
        double* s = part.data() + at::get_thread_num() * 2 * c;
        CM_ISA_CALL(isa, add_channel_moments, xs + p0 * c, p1 - p0, c, shift.data() + i * c, s,
                    s + c);
      });
      for (int64_t t = 0; t < threads; ++t) {
        for (int64_t ch = 0; ch < c; ++ch) {
          sum[i * c + ch] += part[(t * 2) * c + ch];
          sumsq[i * c + ch] += part[(t * 2 + 1) * c + ch];
        }
      }
    }
  } else {
    at::parallel_for(0, n * c, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        CM_ISA_CALL(isa, moments, xp + r * hw, hw, shift[r], &sum[r], &sumsq[r]);
    });
  }

  // Per group: mean and 1/std of x + offset; per channel: y = x·a + b.
  std::vector<float> a(n * c), b(n * c);
  const int64_t per_group = c / groups;
  const double count = static_cast<double>(per_group * hw);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t r0 = i * c + g * per_group, r1 = r0 + per_group;
      auto centre = [&](int64_t r) {  // the value channel r's sums were taken about, offset
        return static_cast<double>(shift[r]) + (offset.empty() ? 0.0 : offset[r]);
      };
      double total = 0;
      for (int64_t r = r0; r < r1; ++r) total += sum[r] + hw * centre(r);
      const double mean = total / count;
      double squares = 0;  // Σ(x - mean)² from each channel's sums about its own centre
      for (int64_t r = r0; r < r1; ++r) {
        const double d = centre(r) - mean;
        squares += sumsq[r] + 2 * d * sum[r] + hw * d * d;
      }
      const double rstd = 1.0 / std::sqrt(std::max(squares / count, 0.0) + eps);
      for (int64_t r = r0; r < r1; ++r) {
        const double scale = rstd * weight[r];
        const double off = offset.empty() ? 0.0 : offset[r];
        a[r] = static_cast<float>(scale);
        b[r] = static_cast<float>(bias[r] + (off - mean) * scale);
      }
    }
  }

  if (nhwc) {
    at::parallel_for(0, n * hw, std::max<int64_t>(1, 16384 / c), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1;) {
        const int64_t i = p / hw, end = std::min(p1, (i + 1) * hw);
        CM_ISA_CALL(isa, scale_shift_rows, xp + p * c, yp + p * c, end - p, c, a.data() + i * c,
                    b.data() + i * c, silu);
        p = end;
      }
    });
  } else {
    at::parallel_for(0, n * c, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        CM_ISA_CALL(isa, scale_shift, xp + r * hw, yp + r * hw, hw, a[r], b[r], silu);
    });
  }
}

}  // namespace

bool group_norm_act_supported(const at::Tensor& x, int64_t groups) {
  return x.defined() && x.device().is_cpu() && !at::GradMode::is_enabled() && x.dim() >= 3 &&
         (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16) &&
         x.numel() > 0 && groups > 0 && x.size(1) % groups == 0 &&
         (x.is_contiguous() || is_nhwc(x));
}

at::Tensor group_norm_act(const at::Tensor& x, int64_t groups, const at::Tensor& weight,
                          const at::Tensor& bias, double eps, bool silu,
                          const std::optional<at::Tensor>& offset, Isa isa) {
  RECORD_FUNCTION("cm::group_norm_act", std::vector<c10::IValue>{x});  // named in profiles
  TORCH_CHECK(group_norm_act_supported(x, groups), "group_norm_act: unsupported input ",
              x.sizes(), " ", x.scalar_type());
  const int64_t n = x.size(0), c = x.size(1);
  const auto w = per_sample(weight, n, c, "weight");
  const auto b = per_sample(bias, n, c, "bias");
  const auto off = offset ? per_sample(*offset, n, c, "offset") : std::vector<float>{};
  auto y = at::empty_like(x);  // keeps x's layout
  if (x.scalar_type() == at::kFloat) {
    run<float>(x, y, groups, w, b, off, eps, silu, isa);
  } else {
    run<c10::BFloat16>(x, y, groups, w, b, off, eps, silu, isa);
  }
  return y;
}

}  // namespace cm::kernels
