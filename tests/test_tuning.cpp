// cm/tuning.h: OpenBLAS's threads and kernels set at run time, without re-executing the process.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/Parallel.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "cm/error.h"

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

namespace {

// A child process that keeps one core busy while it lives.
class BusyChild {
 public:
  BusyChild() {
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      volatile unsigned long spin = 0;
      for (;;) spin = spin + 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ~BusyChild() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }

 private:
  pid_t pid_;
};

int most_others_running(int samples) {
  int most = 0;
  for (int i = 0; i < samples; ++i) {
    most = std::max(most, cm::cpu_load_now().others_running);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return most;
}

int fewest_others_running(int samples) {
  int fewest = 1 << 20;
  for (int i = 0; i < samples; ++i) {
    fewest = std::min(fewest, cm::cpu_load_now().others_running);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return fewest;
}

}  // namespace

TEST(CpuThreads, ThreadsAreTheCoresOthersLeaveFree) {
  EXPECT_EQ(cm::threads_for_load(2, {2, 0}), 2);
  EXPECT_EQ(cm::threads_for_load(2, {2, 1}), 1);
  EXPECT_EQ(cm::threads_for_load(2, {2, 7}), 1);  // never none
  EXPECT_EQ(cm::threads_for_load(16, {16, 3}), 13);
  EXPECT_EQ(cm::threads_for_load(4, {16, 3}), 4);  // never more than asked
}

TEST(CpuThreads, ABusyProcessIsSeenAndOurOwnThreadsAreNot) {
  {
    BusyChild child;
    EXPECT_GE(most_others_running(10), 1);
  }
  // Threads of this process spinning (as OpenMP's do between layers) are not other processes.
  std::atomic<bool> stop{false};
  std::vector<std::thread> spinners;
  for (int i = 0; i < 3; ++i)
    spinners.emplace_back([&] {
      while (!stop) {
      }
    });
  const int fewest = fewest_others_running(20);
  stop = true;
  for (auto& t : spinners) t.join();
  EXPECT_EQ(fewest, 0);
}

TEST(CpuThreads, AdaptiveCallsLeaveTheBusyCoreAlone) {
  const int cores = cm::cpu_load_now().cores;
  cm::set_cpu_threads(3);
  EXPECT_EQ(cm::cpu_threads_setting(), 3);
  EXPECT_EQ(cm::adapt_cpu_threads(), 3);  // fixed: the load is not looked at
  EXPECT_EQ(at::get_num_threads(), 3);
  cm::set_cpu_threads(0);
  EXPECT_EQ(cm::cpu_threads_setting(), 0);
  {
    BusyChild child;
    // Two samples, 50 ms apart at least, see the neighbour.
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
    cm::adapt_cpu_threads();
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
    const int threads = cm::adapt_cpu_threads();
    EXPECT_LE(threads, std::max(1, cores - 1));
    EXPECT_EQ(at::get_num_threads(), threads);
  }
  EXPECT_THROW(cm::set_cpu_threads(-1), cm::Error);
  EXPECT_THROW(cm::set_cpu_threads(4 * cores + 1), cm::Error);
  cm::set_cpu_threads(cores);
}
