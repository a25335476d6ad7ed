#pragma once
// The hand-written CPU loops behind src/kernels, compiled once per instruction set (generic,
// AVX2, AVX-512: isa_*.cpp) on raw pointers, so that no tensor code is built with wider
// instructions than the CPU running it has. The callers (norm_act.cpp, softmax.cpp) pick one with
// best_isa() and share the work out over the threads.
#include <c10/util/BFloat16.h>
#include <cstdint>

namespace cm::kernels {

enum class Isa { kGeneric, kAvx2, kAvx512 };

// The widest set this CPU runs and ATen's ATEN_CPU_CAPABILITY allows.
Isa best_isa();
const char* isa_name(Isa isa);

#define CM_DECLARE_ISA_KERNELS(ns)                                                               \
  namespace ns {                                                                                 \
  /* Adds each channel's sum and sum of squares of x - shift[c] over `pixels` rows of         \
     `channels` values (shifted by a value near the mean, so the squares do not cancel). */     \
  void add_channel_moments(const float* x, int64_t pixels, int64_t channels,                   \
                           const float* shift, double* sum, double* sumsq);                    \
  void add_channel_moments(const c10::BFloat16* x, int64_t pixels, int64_t channels,            \
                           const float* shift, double* sum, double* sumsq);                    \
  /* Sum and sum of squares of x - shift over n contiguous values. */                           \
  void moments(const float* x, int64_t n, float shift, double* sum, double* sumsq);              \
  void moments(const c10::BFloat16* x, int64_t n, float shift, double* sum, double* sumsq);      \
  /* y = x·a + b per channel over `pixels` rows of `channels` values, then SiLU if asked. */    \
  void scale_shift_rows(const float* x, float* y, int64_t pixels, int64_t channels,             \
                        const float* a, const float* b, bool silu);                              \
  void scale_shift_rows(const c10::BFloat16* x, c10::BFloat16* y, int64_t pixels,               \
                        int64_t channels, const float* a, const float* b, bool silu);           \
  /* y = x·a + b over n contiguous values, then SiLU if asked. */                               \
  void scale_shift(const float* x, float* y, int64_t n, float a, float b, bool silu);           \
  void scale_shift(const c10::BFloat16* x, c10::BFloat16* y, int64_t n, float a, float b,       \
                   bool silu);                                                                   \
  /* Softmax of each of `rows` rows of `len` values, in float32 whatever the storage type;      \
     `scratch` holds `len` floats. */                                                           \
  void softmax_rows(const float* x, float* y, int64_t rows, int64_t len, float* scratch);       \
  void softmax_rows(const c10::BFloat16* x, c10::BFloat16* y, int64_t rows, int64_t len,        \
                    float* scratch);                                                             \
  }

CM_DECLARE_ISA_KERNELS(generic)
CM_DECLARE_ISA_KERNELS(avx2)
CM_DECLARE_ISA_KERNELS(avx512)

// Calls ns::fn(args...) for the chosen instruction set.
#define CM_ISA_CALL(isa, fn, ...)                      \
  do {                                                 \
    switch (isa) {                                     \
      case ::cm::kernels::Isa::kAvx512:                \
        ::cm::kernels::avx512::fn(__VA_ARGS__);        \
        break;                                         \
      case ::cm::kernels::Isa::kAvx2:                  \
        ::cm::kernels::avx2::fn(__VA_ARGS__);          \
        break;                                         \
      default:                                         \
        ::cm::kernels::generic::fn(__VA_ARGS__);       \
    }                                                  \
  } while (0)

}  // namespace cm::kernels
