#include "memory_policy.h"

#include <cstdlib>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace cm::cli {
namespace {

void set_mmap_threshold(int bytes) {
#if defined(__GLIBC__)
  if (!std::getenv("MALLOC_MMAP_THRESHOLD_")) mallopt(M_MMAP_THRESHOLD, bytes);
#else
  (void)bytes;
#endif
}

}  // namespace

void memory_policy_for_loading() { set_mmap_threshold(8 << 20); }
void memory_policy_for_running() { set_mmap_threshold(512 << 20); }

}  // namespace cm::cli
