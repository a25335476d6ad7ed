// Runs the real cm binary (CM_BINARY, a compile definition) as a user would, for the CLI tests.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace cm::test {

struct RunResult {
  int status = -1;
  std::string output;  // stdout and stderr together
};

// Runs one /bin/sh command line (stderr is not redirected here).
inline RunResult run_shell(const std::string& cmd) {
  RunResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf{};
  size_t n = 0;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(pipe);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline RunResult run_cm(const std::string& args) {
  return run_shell(std::string(CM_BINARY) + " " + args + " 2>&1");
}

}  // namespace cm::test
