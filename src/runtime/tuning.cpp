#include "cm/tuning.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "runtime/blas_core.h"

namespace cm {
namespace {

// OpenBLAS's entry points, looked up in the process (LibTorch links whichever BLAS the system
// provides; Debian's alternatives may make it OpenBLAS, BLIS or the reference BLAS).
template <typename F>
F openblas_symbol(const char* name) {
  return reinterpret_cast<F>(::dlsym(RTLD_DEFAULT, name));
}

bool is_avx512_core(const std::string& core) {
  return core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids";
}

void set_mmap_threshold(int bytes) {
#if defined(__GLIBC__)
  if (!std::getenv("MALLOC_MMAP_THRESHOLD_")) mallopt(M_MMAP_THRESHOLD, bytes);
#else
  (void)bytes;
#endif
}

}  // namespace

BlasInfo blas_info() {
  BlasInfo info;
  auto corename = openblas_symbol<char* (*)()>("openblas_get_corename");
  auto threads = openblas_symbol<int (*)()>("openblas_get_num_threads");
  if (!corename || !threads) return info;
  info.library = "OpenBLAS";
  info.core = corename();
  info.threads = threads();
  return info;
}

namespace detail {

bool select_blas_core(const char* core) {
  // OpenBLAS chooses its kernels once, when it is loaded, from the CPU or OPENBLAS_CORETYPE; these
  // two exported functions of its DYNAMIC_ARCH builds undo and redo that choice. Safe before the
  // first BLAS call: the choice is one pointer to a table of kernels and block sizes.
  auto quit = openblas_symbol<void (*)()>("gotoblas_dynamic_quit");
  auto init = openblas_symbol<void (*)()>("gotoblas_dynamic_init");
  if (!quit || !init) return false;
  const char* user = std::getenv("OPENBLAS_CORETYPE");
  const std::string saved = user ? user : "";
  ::setenv("OPENBLAS_CORETYPE", core, 1);
  quit();
  init();
  if (user) {
    ::setenv("OPENBLAS_CORETYPE", saved.c_str(), 1);
  } else {
    ::unsetenv("OPENBLAS_CORETYPE");
  }
  return blas_info().core == core;
}

}  // namespace detail

BlasInfo tune_blas(const BlasTuning& tuning) {
  BlasInfo info = blas_info();
  if (info.library.empty()) return info;
  if (tuning.single_thread && !std::getenv("OPENBLAS_NUM_THREADS")) {
    openblas_symbol<void (*)(int)>("openblas_set_num_threads")(1);
  }
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (tuning.avx512_kernels && !std::getenv("OPENBLAS_CORETYPE") &&
      __builtin_cpu_supports("avx512f") && !is_avx512_core(info.core)) {
    detail::select_blas_core("SkylakeX");
  }
#endif
  return blas_info();
}

void memory_policy_for_loading() {
  set_mmap_threshold(8 << 20);
}
void memory_policy_for_running() {
  set_mmap_threshold(512 << 20);
}

}  // namespace cm
