// The body of isa_generic.cpp, isa_avx2.cpp and isa_avx512.cpp: each defines CM_ISA (the
// namespace) and ATen's CPU_CAPABILITY macros, and is compiled with its own -m flags, so
// at::vec::Vectorized<float> is 8 or 16 lanes and exp() is SLEEF's, as in ATen's own kernels.
// Only raw pointers cross into here: no tensor code is compiled with wider instructions.
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "kernels/isa.h"

namespace cm::kernels::CM_ISA {
namespace {

using Vec = at::vec::Vectorized<float>;
using VecB = at::vec::Vectorized<c10::BFloat16>;
constexpr int64_t kV = Vec::size();
constexpr int64_t kStep = 2 * kV;  // one vector of bfloat16 widens to two of float
static_assert(VecB::size() == kStep, "bfloat16 vectors hold twice the float lanes");

// n ≤ kStep values as two float vectors, zeros past n.
inline void load2(const float* p, int64_t n, Vec& a, Vec& b) {
  if (n == kStep) {
    a = Vec::loadu(p);
    b = Vec::loadu(p + kV);
    return;
  }
  a = Vec::loadu(p, std::min(n, kV));
  b = n > kV ? Vec::loadu(p + kV, n - kV) : Vec(0.f);
}
inline void load2(const c10::BFloat16* p, int64_t n, Vec& a, Vec& b) {
  const VecB v = n == kStep ? VecB::loadu(p) : VecB::loadu(p, n);
  std::tie(a, b) = at::vec::convert_bfloat16_float(v);
}
inline void store2(float* p, int64_t n, const Vec& a, const Vec& b) {
  if (n == kStep) {
    a.store(p);
    b.store(p + kV);
    return;
  }
  a.store(p, std::min(n, kV));
  if (n > kV) b.store(p + kV, n - kV);
}
inline void store2(c10::BFloat16* p, int64_t n, const Vec& a, const Vec& b) {
  const VecB v = at::vec::convert_float_bfloat16(a, b);  // round to nearest even, as c10 does
  if (n == kStep) {
    v.store(p);
  } else {
    v.store(p, n);
  }
}

inline float lane_sum(const Vec& v) {
  float lanes[kV];
  v.store(lanes);
  float s = 0;
  for (float x : lanes) s += x;
  return s;
}
inline float lane_max(const Vec& v) {
  float lanes[kV];
  v.store(lanes);
  float m = lanes[0];
  for (float x : lanes) m = std::max(m, x);
  return m;
}

// exp to about 2 ulp (Cephes' expf: e^x = 2^n · e^r with |r| ≤ ln2/2, a degree-7 polynomial
// for e^r), for bfloat16 results only, which keep 8 bits of it; float32 keeps SLEEF's exp, ATen's.
// Inputs are clamped to [-87, 88] (e^-87 stands in for 0); NaN passes through. Written with
// intrinsics: the same steps through at::vec (whose minimum/maximum add NaN checks and mask
// conversions) ran 5× slower; this runs at 0.25 ns a value against SLEEF's 0.36 (one core,
// AVX-512, a loop over 16K values in cache).
inline Vec fast_exp(const Vec& x) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#if defined(CPU_CAPABILITY_AVX512)
  // max/min return their second operand when either is NaN: x last keeps a NaN.
  const Vec v = _mm512_min_ps(_mm512_set1_ps(88.f), _mm512_max_ps(_mm512_set1_ps(-87.f), x));
  const Vec n = _mm512_roundscale_ps(v * Vec(1.44269504088896341f),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  const Vec v = _mm256_min_ps(_mm256_set1_ps(88.f), _mm256_max_ps(_mm256_set1_ps(-87.f), x));
  const Vec n = _mm256_round_ps(v * Vec(1.44269504088896341f),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#endif
  // e^r for r = v - n·ln2 (ln2 in two parts), |r| ≤ ln2/2.
  const Vec r = at::vec::fmadd(n, Vec(2.12194440e-4f), at::vec::fmadd(n, Vec(-0.693359375f), v));
  Vec p(1.9875691500E-4f);
  for (const float c : {1.3981999507E-3f, 8.3334519073E-3f, 4.1665795894E-2f, 1.6666665459E-1f,
                        5.0000001201E-1f})
    p = at::vec::fmadd(p, r, Vec(c));
  p = at::vec::fmadd(p, r * r, r + Vec(1.f));
#if defined(CPU_CAPABILITY_AVX512)
  return _mm512_scalef_ps(p, n);  // p · 2^n
#else
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return p * Vec(_mm256_castsi256_ps(e));
#endif
#else
  return x.exp();
#endif
}

// SiLU, x / (1 + exp(-x)) as ATen computes it: with SLEEF's exp in float32, so results match
// at::silu's; with fast_exp where they are rounded to bfloat16. (A reciprocal estimate with a
// Newton step in place of the division measured no faster.)
template <typename T>
inline Vec silu(const Vec& x) {
  if constexpr (std::is_same_v<T, float>) {
    return x / (Vec(1.f) + x.neg().exp());
  } else {
    return x / (Vec(1.f) + fast_exp(x.neg()));
  }
}

// Float partial sums over at most this many terms per lane, then float64: the inner loop stays
// vectorised and each float sum's rounding stays small.
constexpr int64_t kBlock = 64;

// Adds x - shift and its square into the running sums, two float vectors at a time.
inline void accumulate(Vec a, Vec b, const Vec& ka, const Vec& kb, Vec& sa, Vec& sb, Vec& qa,
                       Vec& qb) {
  a = a - ka;
  b = b - kb;
  sa = sa + a;
  sb = sb + b;
  qa = at::vec::fmadd(a, a, qa);
  qb = at::vec::fmadd(b, b, qb);
}

// Channel vectors outer, a block of pixels inner: the sums stay in registers and each pixel row
// is read once (a block of rows fits in L2).
template <typename T>
void add_channel_moments_impl(const T* x, int64_t pixels, int64_t channels, const float* shift,
                              double* sum, double* sumsq) {
  for (int64_t p0 = 0; p0 < pixels; p0 += kBlock) {
    const int64_t p1 = std::min(pixels, p0 + kBlock);
    for (int64_t c = 0; c < channels; c += kStep) {
      const int64_t n = std::min(kStep, channels - c);
      Vec ka, kb, a, b;
      load2(shift + c, n, ka, kb);  // lanes past n: zero, like x's, so they add nothing
      Vec sa(0.f), sb(0.f), qa(0.f), qb(0.f);
      for (int64_t p = p0; p < p1; ++p) {
        load2(x + p * channels + c, n, a, b);
        accumulate(a, b, ka, kb, sa, sb, qa, qb);
      }
      float s[kStep], q[kStep];
      store2(s, kStep, sa, sb);
      store2(q, kStep, qa, qb);
      for (int64_t j = 0; j < n; ++j) {
        sum[c + j] += s[j];
        sumsq[c + j] += q[j];
      }
    }
  }
}

template <typename T>
void moments_impl(const T* x, int64_t n, float shift, double* sum, double* sumsq) {
  double s = 0, q = 0;
  const Vec k(shift);
  int64_t i = 0;
  while (i < n) {
    Vec sa(0.f), sb(0.f), qa(0.f), qb(0.f);
    for (int64_t j = 0; j < kBlock && i < n; ++j, i += kStep) {
      const int64_t m = std::min(kStep, n - i);
      Vec a, b;
      load2(x + i, m, a, b);
      if (m < kStep) {
        // Lanes past m were loaded as zero; shifted they would count -shift: zero them after.
        float t[kStep];
        store2(t, kStep, a - k, b - k);
        std::fill(t + m, t + kStep, 0.f);
        load2(t, kStep, a, b);
        accumulate(a, b, Vec(0.f), Vec(0.f), sa, sb, qa, qb);
      } else {
        accumulate(a, b, k, k, sa, sb, qa, qb);
      }
    }
    s += lane_sum(sa + sb);
    q += lane_sum(qa + qb);
  }
  *sum += s;
  *sumsq += q;
}

// y = x·a + b, then SiLU if asked, over `len` values; coef(c, n, a0, a1, b0, b1) supplies a and b
// for values c .. c+n: one per channel, or one pair for all.
template <typename T, typename Coef>
void affine_span(const T* x, T* y, int64_t len, const Coef& coef, bool act) {
  for (int64_t c = 0; c < len; c += kStep) {
    const int64_t n = std::min(kStep, len - c);
    Vec v0, v1, a0, a1, b0, b1;
    load2(x + c, n, v0, v1);
    coef(c, n, a0, a1, b0, b1);
    v0 = at::vec::fmadd(v0, a0, b0);
    v1 = at::vec::fmadd(v1, a1, b1);
    if (act) {
      v0 = silu<T>(v0);
      v1 = silu<T>(v1);
    }
    store2(y + c, n, v0, v1);
  }
}

template <typename T>
void scale_shift_rows_impl(const T* x, T* y, int64_t pixels, int64_t channels, const float* a,
                           const float* b, bool act) {
  const auto per_channel = [&](int64_t c, int64_t n, Vec& a0, Vec& a1, Vec& b0, Vec& b1) {
    load2(a + c, n, a0, a1);
    load2(b + c, n, b0, b1);
  };
  for (int64_t p = 0; p < pixels; ++p)
    affine_span(x + p * channels, y + p * channels, channels, per_channel, act);
}

template <typename T>
void scale_shift_impl(const T* x, T* y, int64_t n, float a, float b, bool act) {
  const Vec va(a), vb(b);
  const auto same = [&](int64_t, int64_t, Vec& a0, Vec& a1, Vec& b0, Vec& b1) {
    a0 = a1 = va;
    b0 = b1 = vb;
  };
  affine_span(x, y, n, same, act);
}

// Per row: max, exp(x - max) and its sum, times 1/sum (the steps of ATen's vectorised softmax),
// in float32; bfloat16 rows are widened into scratch first and rounded once at the end.
template <typename T>
void softmax_rows_impl(const T* x, T* y, int64_t rows, int64_t len, float* scratch) {
  constexpr bool kFloat = std::is_same_v<T, float>;
  const int64_t full = len / kV * kV;
  for (int64_t r = 0; r < rows; ++r) {
    const T* in = x + r * len;
    T* out = y + r * len;
    const float* src;
    float* work;  // exp(x - max), then the probabilities
    if constexpr (kFloat) {
      src = in;
      work = out;
    } else {
      for (int64_t c = 0; c < len; c += kStep) {
        const int64_t n = std::min(kStep, len - c);
        Vec a, b;
        load2(in + c, n, a, b);
        store2(scratch + c, n, a, b);
      }
      src = work = scratch;
    }
    float mx = -std::numeric_limits<float>::infinity();
    if (full > 0) {
      Vec m = Vec::loadu(src);
      for (int64_t c = kV; c < full; c += kV) m = at::vec::maximum(m, Vec::loadu(src + c));
      mx = lane_max(m);
    }
    for (int64_t c = full; c < len; ++c) mx = std::max(mx, src[c]);
    const Vec vmx(mx);
    Vec acc(0.f);
    for (int64_t c = 0; c < full; c += kV) {
      const Vec e = kFloat ? (Vec::loadu(src + c) - vmx).exp() : fast_exp(Vec::loadu(src + c) - vmx);
      e.store(work + c);
      acc = acc + e;
    }
    float total = lane_sum(acc);
    if (full < len) {
      // The tail goes through the same vector exp, its unused lanes dropped.
      float lanes[kV];
      const Vec d = Vec::loadu(src + full, len - full) - vmx;
      (kFloat ? d.exp() : fast_exp(d)).store(lanes);
      for (int64_t c = full; c < len; ++c) {
        work[c] = lanes[c - full];
        total += work[c];
      }
    }
    const Vec inv(1.f / total);
    for (int64_t c = 0; c < len; c += kStep) {
      const int64_t n = std::min(kStep, len - c);
      Vec a, b;
      load2(work + c, n, a, b);
      store2(out + c, n, a * inv, b * inv);
    }
  }
}

}  // namespace

void add_channel_moments(const float* x, int64_t pixels, int64_t channels, const float* shift,
                         double* sum, double* sumsq) {
  add_channel_moments_impl(x, pixels, channels, shift, sum, sumsq);
}
void add_channel_moments(const c10::BFloat16* x, int64_t pixels, int64_t channels,
                         const float* shift, double* sum, double* sumsq) {
  add_channel_moments_impl(x, pixels, channels, shift, sum, sumsq);
}
void moments(const float* x, int64_t n, float shift, double* sum, double* sumsq) {
  moments_impl(x, n, shift, sum, sumsq);
}
void moments(const c10::BFloat16* x, int64_t n, float shift, double* sum, double* sumsq) {
  moments_impl(x, n, shift, sum, sumsq);
}
void scale_shift_rows(const float* x, float* y, int64_t pixels, int64_t channels, const float* a,
                      const float* b, bool silu) {
  scale_shift_rows_impl(x, y, pixels, channels, a, b, silu);
}
void scale_shift_rows(const c10::BFloat16* x, c10::BFloat16* y, int64_t pixels,
                      int64_t channels, const float* a, const float* b, bool silu) {
  scale_shift_rows_impl(x, y, pixels, channels, a, b, silu);
}
void scale_shift(const float* x, float* y, int64_t n, float a, float b, bool silu) {
  scale_shift_impl(x, y, n, a, b, silu);
}
void scale_shift(const c10::BFloat16* x, c10::BFloat16* y, int64_t n, float a, float b,
                 bool silu) {
  scale_shift_impl(x, y, n, a, b, silu);
}
void softmax_rows(const float* x, float* y, int64_t rows, int64_t len, float* scratch) {
  softmax_rows_impl(x, y, rows, len, scratch);
}
void softmax_rows(const c10::BFloat16* x, c10::BFloat16* y, int64_t rows, int64_t len,
                  float* scratch) {
  softmax_rows_impl(x, y, rows, len, scratch);
}

}  // namespace cm::kernels::CM_ISA
