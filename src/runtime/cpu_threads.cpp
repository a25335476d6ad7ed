// Adaptive CPU thread counts (cm/tuning.h): the cores other processes leave free.
#include <ATen/Parallel.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include "cm/error.h"
#include "cm/tuning.h"

namespace cm {

namespace {

cpu_set_t affinity() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) == 0) {
    CPU_ZERO(&set);
    for (unsigned i = 0; i < std::max(1u, std::thread::hardware_concurrency()); ++i)
      CPU_SET(i, &set);
  }
  return set;
}

int usable_cores() {
  const cpu_set_t set = affinity();
  return CPU_COUNT(&set);
}

// Seconds the given cores spent running anything since boot: the "cpuN" lines of /proc/stat
// (user nice system idle iowait irq softirq steal ..., in clock ticks), all but idle, iowait and
// steal. Only this process's cores: in a container the others are someone else's business.
double busy_seconds(const cpu_set_t& cores) {
  FILE* f = std::fopen("/proc/stat", "re");
  if (!f) return 0;
  static const double tick = static_cast<double>(std::max(1L, sysconf(_SC_CLK_TCK)));
  unsigned long long busy = 0;
  char line[512];
  bool line_start = true;  // the "intr" line is longer than the buffer
  while (std::fgets(line, sizeof line, f)) {
    const bool whole_line_start = line_start;
    line_start = std::strchr(line, '\n') != nullptr;
    // "cpuN": not the first line ("cpu", all cores together) nor the lines after the cores.
    if (!whole_line_start || std::strncmp(line, "cpu", 3) != 0 || !std::isdigit(line[3])) continue;
    unsigned cpu;
    unsigned long long user, nice, system, idle, iowait, irq, softirq;
    if (std::sscanf(line, "cpu%u %llu %llu %llu %llu %llu %llu %llu", &cpu, &user, &nice, &system,
                    &idle, &iowait, &irq, &softirq) != 8)
      continue;
    if (cpu < CPU_SETSIZE && CPU_ISSET(cpu, &cores)) busy += user + nice + system + irq + softirq;
  }
  std::fclose(f);
  return static_cast<double>(busy) / tick;
}

double own_cpu_seconds() {
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec * 1e-6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

std::atomic<int> g_setting{-1};  // -1: never set (LibTorch's default team, left alone)

struct Sample {
  std::mutex mutex;
  CpuTimes times;  // wall == 0: none yet
  int threads = 0;
  double others = 0;  // the previous interval's
};
Sample g_sample;

// Long enough that clock-tick accounting (10 ms per tick and core) is a small error.
constexpr double kMinInterval = 0.1;

}  // namespace

CpuTimes cpu_times_now() {
  CpuTimes times;
  const cpu_set_t cores = affinity();
  times.cores = CPU_COUNT(&cores);
  // The same order at both ends of an interval, so both cover it to within a read's time.
  times.own = own_cpu_seconds();
  times.busy = busy_seconds(cores);
  times.wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  return times;
}

CpuLoad cpu_load_between(const CpuTimes& before, const CpuTimes& after) {
  CpuLoad load;
  load.cores = after.cores;
  const double wall = after.wall - before.wall;
  if (wall > 0)
    load.others_busy =
        std::max(0.0, ((after.busy - before.busy) - (after.own - before.own)) / wall);
  return load;
}

int threads_for_load(int max_threads, const CpuLoad& load) {
  const int others = static_cast<int>(std::lround(load.others_busy));
  return std::max(1, std::min(max_threads, load.cores - others));
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
    g_sample.times = CpuTimes{};
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
    std::lock_guard<std::mutex> lock(g_sample.mutex);
    const double now =
        std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    if (g_sample.times.wall == 0) {
      g_sample.times = cpu_times_now();
      g_sample.threads = usable_cores();
    } else if (now - g_sample.times.wall >= kMinInterval) {
      // A neighbour counts once two intervals in a row see it: a kernel worker or a shell that
      // runs for a moment does not halve the next calls.
      const CpuTimes times = cpu_times_now();
      CpuLoad load = cpu_load_between(g_sample.times, times);
      const double others = load.others_busy;
      load.others_busy = std::min(others, g_sample.others);
      g_sample.others = others;
      g_sample.threads = threads_for_load(usable_cores(), load);
      g_sample.times = times;
    }
    want = g_sample.threads;
  }
  // OpenMP's team size is the calling thread's: a server's engine thread sets its own.
  if (at::get_num_threads() != want) at::set_num_threads(want);
  return want;
}

}  // namespace cm
