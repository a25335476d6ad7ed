// Shared by the fuzz targets. Each target's contract: malformed input ends in cm::Error (the
// one-line error every reader promises) and nothing else — any other exception escapes to
// libFuzzer (or to replay.cpp) and counts as a finding, as do crashes and sanitizer reports.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace cm::fuzz {

// The readers that take a path get the input through one file per process, on tmpfs where there
// is one. Written with plain stdio: the code under test is not used to stage its own input.
inline std::string input_file(const uint8_t* data, size_t size, const char* suffix) {
  static const std::string base =
      std::string(access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + "/cm-fuzz-" +
      std::to_string(getpid());
  const std::string path = base + suffix;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (size && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
  return path;
}

// Reading every byte a parser says is there makes ASan check its bounds.
inline unsigned touch(const void* p, size_t n) {
  unsigned sum = 0;
  for (size_t i = 0; i < n; ++i) sum += static_cast<const unsigned char*>(p)[i];
  return sum;
}

}  // namespace cm::fuzz
