// Process-wide tuning for speed on the CPU: the BLAS library's threads and kernels, glibc's
// allocator policy, and adaptive thread counts. cm makes these calls itself (tools/cm/cli.cpp);
// a program that embeds the library makes them when it wants the same speed. Nothing here runs
// unless called.
#pragma once

#include <string>

namespace cm {

struct BlasInfo {
  std::string library;  // "OpenBLAS", or "" when LibTorch's BLAS is not an OpenBLAS we can query
  std::string core;     // the kernels OpenBLAS runs (its core name, e.g. "SkylakeX")
  int threads = 0;      // OpenBLAS's own threads used per call
};

struct BlasTuning {
  // One OpenBLAS thread per call: OpenBLAS's own pthreads spin and yield between calls on the
  // cores LibTorch's OpenMP threads (and oneDNN's convolutions) need; a float32 ImageNet-64
  // forward ran ~20% faster without them (docs/performance.md). Measured for sampling only.
  bool single_thread = true;
  // On an AVX-512 CPU that the loaded OpenBLAS does not recognise (Debian 12's 0.3.21 predates
  // Zen 5, and falls back to AVX2 kernels), its SkylakeX kernels: attention and linear layers ran
  // ~2x faster with them.
  bool avx512_kernels = true;
};

// Applies `tuning` to the OpenBLAS LibTorch uses, leaving alone what the user chose through
// OPENBLAS_NUM_THREADS or OPENBLAS_CORETYPE; call it before the first BLAS call (at the start of
// main). Returns what is in effect afterwards. Without OpenBLAS it does nothing.
BlasInfo tune_blas(const BlasTuning& tuning = {});
BlasInfo blas_info();

// glibc's malloc policy, in two phases. glibc serves blocks below its mmap threshold from the
// heap, whose freed pages stay resident, and above it with mmap, which returns them on free but
// page-faults them in again on every allocation.
// - While weights are loaded and packed, the threshold is 8 MB, so freed weight-sized blocks leave
//   the process: ImageNet-64 peaked at 1581 MB with glibc's default and 1458 MB with this.
// - Once the weights are packed (after the load), only activations come and go: the threshold is
// raised to 512 MB
//   so they are reused from the heap instead of faulted in (LSUN-256 float32: 10.5 → 8.6 s).
// MALLOC_MMAP_THRESHOLD_ in the environment overrides both.
void memory_policy_for_loading();
void memory_policy_for_running();

}  // namespace cm

namespace cm {

// CPU threads per call. OpenMP's team waits at every layer for its slowest thread, so a thread
// that shares its core with another busy process stalls the whole call for a scheduler time
// slice per layer: the shipped model at batch 1 took 12-23x its idle time next to one busy
// process. In adaptive mode each inference call first looks at how much of its cores' time
// other processes used lately and uses the rest (at least one). Time used over an interval, not
// the threads runnable at one instant: a server's clients on the same machine run in short
// bursts just as a call ends (their answers have arrived), and a count taken then saw them as a
// busy neighbour and halved the server's next call.
struct CpuTimes {
  int cores = 1;    // cores this process may run on (its affinity mask)
  double busy = 0;  // seconds those cores spent running anything since boot (/proc/stat)
  double own = 0;   // seconds of CPU this process has used (getrusage)
  double wall = 0;  // a steady clock, seconds
};
CpuTimes cpu_times_now();
struct CpuLoad {
  int cores = 1;           // cores this process may run on
  double others_busy = 0;  // how many of them other processes kept busy, on average
};
// The load between two readings: (busy - own) / wall, never below 0.
CpuLoad cpu_load_between(const CpuTimes& before, const CpuTimes& after);
// The threads a call should use: the cores others leave free (their busy cores rounded to the
// nearest whole core), between 1 and `max_threads`.
int threads_for_load(int max_threads, const CpuLoad& load);

// 0: adaptive, up to every core; N > 0: always N. Sets the calling thread's OpenMP team too.
// Throws cm::Error outside 0..4x the cores (more only slows a call; thousands never started).
void set_cpu_threads(int threads);
// What set_cpu_threads chose (0: adaptive).
int cpu_threads_setting();
// Called by the library before each inference call of the UNet on the CPU, on the thread that
// runs it: sizes that thread's OpenMP team (the load is measured over intervals of at least
// 100 ms, and a neighbour counts once two intervals in a row see it). Returns
// the threads the call will use.
int adapt_cpu_threads();

}  // namespace cm
