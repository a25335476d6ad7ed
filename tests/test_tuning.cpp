// cm/tuning.h: OpenBLAS's threads and kernels set at run time, without re-executing the process.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>

#include "cm/system.h"
#include "cm/tuning.h"
#include "runtime/blas_core.h"

namespace {

// A float32 product through LibTorch's BLAS against the same product in float64.
double matmul_error() {
  torch::manual_seed(0);
  const auto a = torch::randn({96, 80});
  const auto b = torch::randn({80, 72});
  const auto reference = torch::mm(a.to(torch::kFloat64), b.to(torch::kFloat64));
  return (torch::mm(a, b).to(torch::kFloat64) - reference).abs().max().item<double>();
}

}  // namespace

TEST(Tuning, BlasIsOpenBlasInTheDebianBuild) {
#if CM_CUDA
  // PyPI's LibTorch carries its own BLAS (MKL): nothing to find, nothing changed.
  EXPECT_EQ(cm::blas_info().library, "");
  EXPECT_EQ(cm::tune_blas().library, "");
#else
  EXPECT_EQ(cm::blas_info().library, "OpenBLAS");
  EXPECT_NE(cm::describe(cm::system_info()).find("BLAS: OpenBLAS, "), std::string::npos);
#endif
}

TEST(Tuning, KernelsAreChosenAtRunTime) {
  const cm::BlasInfo before = cm::blas_info();
  if (before.library.empty()) GTEST_SKIP() << "LibTorch's BLAS is not OpenBLAS";
  ASSERT_TRUE(cm::detail::select_blas_core("Haswell"));
  EXPECT_EQ(cm::blas_info().core, "Haswell");
  EXPECT_LT(matmul_error(), 1e-4);
  ASSERT_TRUE(cm::detail::select_blas_core("Prescott"));  // SSE3 kernels: any x86-64 runs them
  EXPECT_EQ(cm::blas_info().core, "Prescott");
  EXPECT_LT(matmul_error(), 1e-4);
  // The user's own choice is put back as it was.
  EXPECT_EQ(std::getenv("OPENBLAS_CORETYPE"), nullptr);
  ASSERT_TRUE(cm::detail::select_blas_core(before.core.c_str()));
  EXPECT_EQ(cm::blas_info().core, before.core);
}

TEST(Tuning, TuneBlasSetsOneThreadAndAvx512Kernels) {
  if (cm::blas_info().library.empty()) GTEST_SKIP() << "LibTorch's BLAS is not OpenBLAS";
  ASSERT_EQ(std::getenv("OPENBLAS_NUM_THREADS"), nullptr) << "run the test without it";
  ASSERT_EQ(std::getenv("OPENBLAS_CORETYPE"), nullptr) << "run the test without it";
  const std::string original = cm::blas_info().core;
  // As on a CPU the loaded OpenBLAS does not know: it fell back to AVX2 kernels.
  ASSERT_TRUE(cm::detail::select_blas_core("Haswell"));
  const cm::BlasInfo tuned = cm::tune_blas();
  EXPECT_EQ(tuned.threads, 1);
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    EXPECT_EQ(tuned.core, "SkylakeX");
  } else {
    EXPECT_EQ(tuned.core, "Haswell");  // no AVX-512: nothing to improve on
  }
  EXPECT_LT(matmul_error(), 1e-4);
  // Turned off, it leaves the kernels as they are.
  ASSERT_TRUE(cm::detail::select_blas_core("Haswell"));
  cm::BlasTuning off;
  off.avx512_kernels = false;
  EXPECT_EQ(cm::tune_blas(off).core, "Haswell");
  ASSERT_TRUE(cm::detail::select_blas_core(original.c_str()));
}
