// cm bench's FLOP model against counts taken with forward hooks on diffusers' UNet2DModel
// (../shared/notes/cpu-measurements.md: ImageNet-64 219 GFLOP = conv 191 + linear 15.7 +
// attention 12.4; LSUN-256 2239 = conv 2202 + linear 24.8 + attention 12.2).
#include <gtest/gtest.h>

#include "cm/bench.h"
#include "cm/error.h"

namespace cm {
namespace {

TEST(BenchFlops, MatchDiffusersHookCounts) {
  const auto in = count_unet_flops(bench_architecture("imagenet64"));
  EXPECT_NEAR(in.total() / 1e9, 219, 0.5);
  EXPECT_NEAR(in.conv / 1e9, 191, 0.5);
  EXPECT_NEAR(in.linear / 1e9, 15.7, 0.05);
  EXPECT_NEAR(in.attention / 1e9, 12.4, 0.05);
  const auto ls = count_unet_flops(bench_architecture("lsun256"));
  EXPECT_NEAR(ls.total() / 1e9, 2239, 1);
  EXPECT_NEAR(ls.conv / 1e9, 2202, 1);
  EXPECT_NEAR(ls.linear / 1e9, 24.8, 0.05);
  EXPECT_NEAR(ls.attention / 1e9, 12.2, 0.05);
}

TEST(BenchFlops, BuiltInArchitecturesMatchThePublishedConfigs) {
  const auto published = UNetConfig::load(CM_CONFIGS_DIR "/imagenet64_unet_config.json");
  EXPECT_EQ(bench_architecture("imagenet64").to_json(), published.to_json());
  const auto lsun = UNetConfig::load(CM_CONFIGS_DIR "/lsun256_unet_config.json");
  EXPECT_EQ(bench_architecture("lsun256").to_json(), lsun.to_json());
  EXPECT_THROW(bench_architecture("imagenet128"), Error);
}

// cm bench --kernels: every row timed, and the fused kernels within rounding of float64
// (float32: a few ulp of values up to ~10; bfloat16: half an 8-bit ulp of them, plus the float32
// softmax/exp error). The plain side is only reported, not judged.
TEST(BenchKernels, RowsAreTimedAndFusedKernelsAreAccurate) {
  const auto rows = run_kernel_bench({"float32", "bfloat16"}, 2, 1);
  ASSERT_GE(rows.size(), 10u);
  for (const auto& r : rows) {
    SCOPED_TRACE(r.kernel + " " + r.shape + " " + r.dtype);
    EXPECT_GT(r.plain_ms, 0);
    EXPECT_GT(r.fused_ms, 0);
    EXPECT_EQ(r.threads, 2);
    EXPECT_LE(r.fused_error, r.dtype == "Float" ? 1e-5 : 0.032);
  }
  EXPECT_NE(kernel_bench_markdown(rows).find("group_norm+silu"), std::string::npos);
  EXPECT_THROW(run_kernel_bench({"float16"}, 1, 1), Error);
}

}  // namespace
}  // namespace cm
