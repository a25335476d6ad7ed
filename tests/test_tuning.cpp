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

// A child process that runs `busy_ms` of every `period_ms` while it lives (busy_ms == period_ms:
// one core always busy), started 200 ms before the constructor returns.
class Child {
 public:
  Child(int busy_ms, int period_ms) {
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      for (;;) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(busy_ms);
        volatile unsigned long spin = 0;
        while (std::chrono::steady_clock::now() < until) spin = spin + 1;
        if (period_ms > busy_ms)
          std::this_thread::sleep_for(std::chrono::milliseconds(period_ms - busy_ms));
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ~Child() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }

 private:
  pid_t pid_;
};
struct BusyChild : Child {
  BusyChild() : Child(1000, 1000) {}
};
// 2 ms in every 20, as a load generator's clients run between the answers they wait for: a
// tenth of a core.
struct BurstyChild : Child {
  BurstyChild() : Child(2, 20) {}
};

// Other processes' busy cores over `intervals` consecutive intervals of 150 ms each.
std::vector<double> others_busy(int intervals) {
  std::vector<double> seen;
  cm::CpuTimes before = cm::cpu_times_now();
  for (int i = 0; i < intervals; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    const cm::CpuTimes after = cm::cpu_times_now();
    seen.push_back(cm::cpu_load_between(before, after).others_busy);
    before = after;
  }
  return seen;
}

// What adaptive mode acts on: the larger of the smaller of each two intervals in a row.
double adaptive_view(const std::vector<double>& seen) {
  double most = 0;
  for (size_t i = 1; i < seen.size(); ++i) most = std::max(most, std::min(seen[i - 1], seen[i]));
  return most;
}

// The quietest interval: what is left when a stray process on a shared machine comes and goes.
double fewest(const std::vector<double>& seen) {
  return *std::min_element(seen.begin(), seen.end());
}

}  // namespace

TEST(CpuThreads, ThreadsAreTheCoresOthersLeaveFree) {
  EXPECT_EQ(cm::threads_for_load(2, {2, 0.0}), 2);
  EXPECT_EQ(cm::threads_for_load(2, {2, 0.3}), 2);   // short bursts: not a neighbour
  EXPECT_EQ(cm::threads_for_load(2, {2, 0.67}), 1);  // a busy process sharing two cores with us
  EXPECT_EQ(cm::threads_for_load(2, {2, 7.0}), 1);   // never none
  EXPECT_EQ(cm::threads_for_load(16, {16, 3.2}), 13);
  EXPECT_EQ(cm::threads_for_load(4, {16, 3.0}), 4);  // never more than asked
}

TEST(CpuThreads, LoadIsOthersTimeOverWallTime) {
  cm::CpuTimes before{2, 100.0, 10.0, 1000.0}, after{2, 101.5, 10.5, 1001.0};
  EXPECT_NEAR(cm::cpu_load_between(before, after).others_busy, 1.0, 1e-9);
  EXPECT_EQ(cm::cpu_load_between(before, after).cores, 2);
  after.own = 12.0;  // tick accounting may lag our own precise time: never below none
  EXPECT_EQ(cm::cpu_load_between(before, after).others_busy, 0.0);
  EXPECT_EQ(cm::cpu_load_between(before, before).others_busy, 0.0);  // no time passed
}

TEST(CpuThreads, ABusyProcessIsSeenAndOurOwnThreadsAndBurstsAreNot) {
  {
    BusyChild child;
    EXPECT_GE(adaptive_view(others_busy(4)), 0.5);
  }
  // Threads of this process spinning (as OpenMP's do between layers) are not other processes.
  std::atomic<bool> stop{false};
  std::vector<std::thread> spinners;
  for (int i = 0; i < 3; ++i)
    spinners.emplace_back([&] {
      while (!stop) {
      }
    });
  const double with_spinners = fewest(others_busy(6));
  stop = true;
  for (auto& t : spinners) t.join();
  EXPECT_LT(with_spinners, 0.5);
  // A process that runs in short bursts (a load generator's clients) does not take a core.
  BurstyChild child;
  EXPECT_LT(fewest(others_busy(6)), 0.5);
}

TEST(CpuThreads, AdaptiveCallsLeaveTheBusyCoreAlone) {
  const int cores = cm::cpu_times_now().cores;
  cm::set_cpu_threads(3);
  EXPECT_EQ(cm::cpu_threads_setting(), 3);
  EXPECT_EQ(cm::adapt_cpu_threads(), 3);  // fixed: the load is not looked at
  EXPECT_EQ(at::get_num_threads(), 3);
  cm::set_cpu_threads(0);
  EXPECT_EQ(cm::cpu_threads_setting(), 0);
  {
    BusyChild child;
    // The first call starts the clock; two intervals of 100 ms at least then see the neighbour.
    cm::adapt_cpu_threads();
    for (int i = 0; i < 2; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(150));
      cm::adapt_cpu_threads();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    const int threads = cm::adapt_cpu_threads();
    EXPECT_LE(threads, std::max(1, cores - 1));
    EXPECT_EQ(at::get_num_threads(), threads);
  }
  EXPECT_THROW(cm::set_cpu_threads(-1), cm::Error);
  EXPECT_THROW(cm::set_cpu_threads(4 * cores + 1), cm::Error);
  cm::set_cpu_threads(cores);
}
