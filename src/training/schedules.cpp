#include "training/schedules.h"

#include <ATen/ATen.h>
#include <algorithm>
#include <cmath>

#include "cm/error.h"

namespace cm::training {

std::vector<double> karras_grid(int64_t n, const SchedulerConfig& c) {
  std::vector<double> grid(n);
  const double lo = std::pow(c.sigma_min, 1 / c.rho), hi = std::pow(c.sigma_max, 1 / c.rho);
  for (int64_t i = 0; i < n; ++i) {
    const double ramp = n == 1 ? 0.0 : static_cast<double>(i) / (n - 1);
    grid[i] = std::pow(lo + ramp * (hi - lo), c.rho);
  }
  return grid;
}

int64_t ict_num_scales(int64_t k, int64_t total_steps, int64_t s0, int64_t s1) {
  const double stages = std::log2(std::floor(static_cast<double>(s1) / s0)) + 1;
  const int64_t k_prime =
      std::max<int64_t>(1, static_cast<int64_t>(std::floor(total_steps / stages)));
  const int64_t exponent = std::min<int64_t>(k / k_prime, 62);
  const double scaled = static_cast<double>(s0) * std::pow(2.0, static_cast<double>(exponent));
  return static_cast<int64_t>(std::min(scaled, static_cast<double>(s1))) + 1;
}

int64_t ct_num_scales(int64_t k, int64_t total_steps, int64_t s0, int64_t s1) {
  const double frac = static_cast<double>(k) / static_cast<double>(total_steps);
  const double v = std::sqrt(frac * ((s1 + 1.0) * (s1 + 1.0) - s0 * s0) + s0 * s0) - 1;
  return std::max<int64_t>(static_cast<int64_t>(std::ceil(v)), 1) + 1;
}

double ct_target_ema(int64_t num_scales, int64_t s0, double mu0) {
  return std::exp(s0 * std::log(mu0) / static_cast<double>(num_scales - 1));
}

std::vector<double> lognormal_index_probs(const std::vector<double>& grid, double p_mean,
                                          double p_std) {
  std::vector<double> p(grid.size() - 1);
  double total = 0;
  for (size_t i = 0; i + 1 < grid.size(); ++i) {
    p[i] = std::erf((std::log(grid[i + 1]) - p_mean) / (std::sqrt(2.0) * p_std)) -
           std::erf((std::log(grid[i]) - p_mean) / (std::sqrt(2.0) * p_std));
    total += p[i];
  }
  for (double& v : p) v /= total;
  return p;
}

at::Tensor pseudo_huber(const at::Tensor& a, const at::Tensor& b, double c) {
  const auto diff = (a - b).flatten(1);
  return (diff.pow(2).sum(1) + c * c).sqrt() - c;
}

double pseudo_huber_c(int64_t dim) { return 0.00054 * std::sqrt(static_cast<double>(dim)); }

at::Tensor ect_r(const at::Tensor& t, int64_t stage, double q, double k, double b) {
  const double decay = std::pow(q, -static_cast<double>(stage + 1));
  return (t * (1 - decay * (1 + k * at::sigmoid(-b * t)))).clamp_min(0);
}

at::Tensor ect_weight(const std::string& kind, const at::Tensor& t, const at::Tensor& r,
                      double sigma_data) {
  if (kind == "dt") return 1.0 / (t - r);
  if (kind == "snr") {
    const double sd2 = sigma_data * sigma_data;
    return (t.pow(2) + sd2) / (t.pow(2) * sd2);
  }
  throw Error("--ect-weighting: unknown value '" + kind + "' (dt, snr)");
}

double ema_rate_at(int64_t k, double rate, bool warmup) {
  if (!warmup) return rate;
  return std::min(rate, static_cast<double>(1 + k) / static_cast<double>(10 + k));
}

double warmup_factor(int64_t step, int64_t warmup) {
  if (warmup <= 0) return 1.0;
  return std::min(1.0, static_cast<double>(step + 1) / static_cast<double>(warmup));
}

}  // namespace cm::training
