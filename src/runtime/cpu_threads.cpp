// Adaptive CPU thread counts (cm/tuning.h): the cores other processes leave free.
#include <ATen/Parallel.h>
#include <dirent.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "cm/error.h"
#include "cm/tuning.h"

namespace cm {

namespace {

int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// The state letter of /proc/<pid>/task/<tid>/stat: after the last ')' (the name may hold one).
bool task_running(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "re");
  if (!f) return false;
  char buf[512];
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = 0;
  const char* close = nullptr;
  for (const char* p = buf; *p; ++p)
    if (*p == ')') close = p;
  return close && close[1] == ' ' && close[2] == 'R';
}

int own_running_threads() {
  DIR* dir = opendir("/proc/self/task");
  if (!dir) return 1;
  int running = 0;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    running += task_running(std::string("/proc/self/task/") + e->d_name + "/stat");
  }
  closedir(dir);
  return std::max(1, running);  // the caller runs
}

// The fourth field of /proc/loadavg, "R/T": runnable scheduling entities of the whole system.
int system_running() {
  FILE* f = std::fopen("/proc/loadavg", "re");
  if (!f) return -1;
  double l1, l5, l15;
  int running = -1, total = 0;
  const int got = std::fscanf(f, "%lf %lf %lf %d/%d", &l1, &l5, &l15, &running, &total);
  std::fclose(f);
  return got == 5 ? running : -1;
}

std::atomic<int> g_setting{-1};  // -1: never set (LibTorch's default team, left alone)

struct Sample {
  std::mutex mutex;
  std::chrono::steady_clock::time_point when{};
  int threads = 0;
  int others = 0;  // the previous sample's
};
Sample g_sample;

}  // namespace

CpuLoad cpu_load_now() {
  CpuLoad load;
  load.cores = usable_cores();
  const int system = system_running();
  // Our own threads first: a thread that starts running between the two reads is counted as
  // ours, never as another process's.
  const int own = own_running_threads();
  load.others_running = system < 0 ? 0 : std::max(0, system - own);
  return load;
}

int threads_for_load(int max_threads, const CpuLoad& load) {
  return std::max(1, std::min(max_threads, load.cores - load.others_running));
}

void set_cpu_threads(int threads) {
  const int cores = usable_cores();
  if (threads < 0 || threads > 4 * cores)
    throw Error("threads: must be between 0 (adaptive, up to all cores) and " +
                std::to_string(4 * cores) + " (4 x this machine's " + std::to_string(cores) +
                " cores), got " + std::to_string(threads));
  g_setting = threads;
  {
    std::lock_guard<std::mutex> lock(g_sample.mutex);
    g_sample.when = {};
    g_sample.others = 0;
  }
  at::set_num_threads(threads == 0 ? cores : threads);
}

int cpu_threads_setting() {
  return std::max(0, g_setting.load());
}

int adapt_cpu_threads() {
  const int setting = g_setting.load();
  int want;
  if (setting < 0) return at::get_num_threads();
  if (setting > 0) {
    want = setting;
  } else {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lock(g_sample.mutex);
    if (now - g_sample.when > std::chrono::milliseconds(50)) {
      // A neighbour counts once two samples in a row see it: a kernel worker or a shell that
      // runs for a moment does not halve the next 50 ms of calls.
      CpuLoad load = cpu_load_now();
      const int others = load.others_running;
      load.others_running = std::min(others, g_sample.others);
      g_sample.others = others;
      g_sample.threads = threads_for_load(usable_cores(), load);
      g_sample.when = now;
    }
    want = g_sample.threads;
  }
  // OpenMP's team size is the calling thread's: a server's engine thread sets its own.
  if (at::get_num_threads() != want) at::set_num_threads(want);
  return want;
}

}  // namespace cm
