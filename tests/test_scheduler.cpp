// CMStochasticIterativeScheduler against diffusers' tables.
#include "cm/error.h"
#include "cm/scheduler.h"
#include "golden.h"

namespace cm::test {
namespace {

SchedulerConfig config_of(const Golden& g) {
  return SchedulerConfig::from_json(g.cases["scheduler_config"].dump(), g.name);
}

TEST(SchedulerGolden, TablesMatchDiffusers) {
  for (const auto& name : golden_names()) {
    const Golden& g = golden(name);
    CMStochasticIterativeScheduler s(config_of(g));
    ASSERT_FALSE(g.cases["scheduler"].empty());
    for (const auto& c : g.cases["scheduler"]) {
      const std::string prefix = c["prefix"];
      SCOPED_TRACE(name + " " + prefix + " " + c.dump());
      if (c.contains("timesteps")) {
        s.set_timesteps(c["timesteps"].get<std::vector<int64_t>>());
      } else {
        s.set_timesteps(c["num_inference_steps"].get<int>());
      }
      const auto t = g.tensor(prefix + "timesteps").to(at::kDouble);
      const auto sig = g.tensor(prefix + "sigmas").to(at::kFloat);
      ASSERT_EQ(static_cast<int64_t>(s.timesteps().size()), t.numel());
      ASSERT_EQ(static_cast<int64_t>(s.sigmas().size()), sig.numel());
      for (int64_t i = 0; i < t.numel(); ++i) {
        const double e = t[i].item<double>();
        EXPECT_NEAR(s.timesteps()[i], e, 1e-6 * std::abs(e)) << "timestep " << i;
      }
      for (int64_t i = 0; i < sig.numel(); ++i) {
        const double e = sig[i].item<float>();
        EXPECT_NEAR(s.sigmas()[i], e, 1e-6 * std::abs(e)) << "sigma " << i;
      }
    }
  }
}

TEST(SchedulerErrors, InvalidTimestepsAreRejectedLikeDiffusers) {
  CMStochasticIterativeScheduler s;  // 40 train timesteps
  auto message = [&](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_NE(message([&] { s.set_timesteps(std::vector<int64_t>{0, 22}); }).find("descending"),
            std::string::npos);
  EXPECT_NE(message([&] { s.set_timesteps(std::vector<int64_t>{40, 0}); }).find("start before"),
            std::string::npos);
  EXPECT_NE(message([&] { s.set_timesteps(41); }).find("41"), std::string::npos);
  EXPECT_NE(message([&] { s.set_timesteps(0); }).find("num_inference_steps"), std::string::npos);
  EXPECT_NE(message([&] { s.set_timesteps(std::vector<int64_t>{}); }).find("empty"),
            std::string::npos);
}

// The one-step update is the boundary-condition denoiser alone: with σ = sigma_max and no noise,
// c_skip·x + c_out·F, clipped.
TEST(SchedulerStep, OneStepIsTheClippedDenoiser) {
  CMStochasticIterativeScheduler s;
  s.set_timesteps(1);
  const auto x = at::randn({1, 3, 4, 4}) * 80;
  const auto f = at::randn({1, 3, 4, 4});
  const double sigma = s.sigmas()[0], smin = 0.002, sd = 0.5;
  const double c_skip = sd * sd / ((sigma - smin) * (sigma - smin) + sd * sd);
  const double c_out = (sigma - smin) * sd / std::sqrt(sigma * sigma + sd * sd);
  const auto expected = (c_skip * x + c_out * f).clamp(-1, 1);
  EXPECT_TRUE(close_scaled(s.step(f, 0, x), expected, 1e-6));
}

}  // namespace
}  // namespace cm::test
