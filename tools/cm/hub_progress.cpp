#include "hub_progress.h"

#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>

namespace cm::cli {

namespace {

using Clock = std::chrono::steady_clock;

std::string format_duration(double seconds) {
  if (seconds < 0 || seconds > 359999) return "--:--";
  const int s = static_cast<int>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%d:%02d", s / 60, s % 60);
  }
  return buf;
}

struct ProgressState {
  std::string file;
  Clock::time_point start, last_draw;
  bool tty = false;
};

}  // namespace

std::string format_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return buf;
}

ProgressCallback download_progress(bool quiet) {
  if (quiet) return nullptr;
  auto state = std::make_shared<ProgressState>();
  state->tty = ::isatty(STDERR_FILENO) == 1;
  return [state](const DownloadProgress& p) {
    const auto now = Clock::now();
    if (p.file != state->file) {
      state->file = p.file;
      state->start = now;
      state->last_draw = Clock::time_point{};
    }
    const double elapsed = std::chrono::duration<double>(now - state->start).count();
    const double rate = elapsed > 0 ? (p.bytes_done - p.bytes_resumed) / elapsed : 0;
    if (!state->tty) {
      if (!p.finished) return;
      std::string line = "downloaded " + p.file + ": " + format_bytes(p.bytes_total);
      if (p.bytes_resumed > 0) line += " (resumed at " + format_bytes(p.bytes_resumed) + ")";
      char tail[64];
      std::snprintf(tail, sizeof tail, " in %.1f s (%s/s)", elapsed,
                    format_bytes(static_cast<uint64_t>(rate)).c_str());
      std::cerr << line << tail << std::endl;
      return;
    }
    // Redrawn at most ten times a second, and once more when done.
    if (!p.finished && now - state->last_draw < std::chrono::milliseconds(100)) return;
    state->last_draw = now;
    const double fraction =
        p.bytes_total > 0 ? static_cast<double>(p.bytes_done) / p.bytes_total : 1.0;
    const int width = 24, filled = static_cast<int>(fraction * width);
    std::string name = p.file.size() > 36 ? "..." + p.file.substr(p.file.size() - 33) : p.file;
    const double left = rate > 0 ? (p.bytes_total - p.bytes_done) / rate : -1;
    char line[256];
    std::snprintf(line, sizeof line, "\r%-36s [%s%s] %3d%% %s/%s %s/s %s", name.c_str(),
                  std::string(filled, '#').c_str(), std::string(width - filled, ' ').c_str(),
                  static_cast<int>(fraction * 100), format_bytes(p.bytes_done).c_str(),
                  format_bytes(p.bytes_total).c_str(),
                  format_bytes(static_cast<uint64_t>(rate)).c_str(),
                  p.finished ? ("in " + format_duration(elapsed)).c_str()
                             : ("ETA " + format_duration(left)).c_str());
    std::cerr << line << "\033[K" << (p.finished ? "\n" : "") << std::flush;
  };
}

HubOptions hub_options(const std::string& variant, bool quiet) {
  HubOptions o;
  o.variant = variant;
  o.progress = download_progress(quiet);
  return o;
}

}  // namespace cm::cli
