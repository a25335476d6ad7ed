// Float <-> IEEE half without hardware support, rounding to nearest even like torch's .half().
// The bit tricks are the well-known ones (F. Giesen, "float->half variants"): adding a magic
// float lets the FPU do the rounding of subnormals; normals round by adding half an ulp.
#include <cstring>

#include "cm/convert.h"

namespace cm {

uint16_t float_to_half(float value) {
  uint32_t f;
  std::memcpy(&f, &value, 4);
  const uint32_t sign = (f >> 16) & 0x8000u;
  f &= 0x7fffffffu;
  if (f >= 0x47800000u) {  // 65536 and beyond: infinity; NaN stays NaN (quiet)
    return static_cast<uint16_t>(sign | (f > 0x7f800000u ? 0x7e00u : 0x7c00u));
  }
  if (f < 0x38800000u) {  // below 2^-14: a half subnormal or zero
    float magic;
    const uint32_t magic_bits = 126u << 23;  // 0.5f
    std::memcpy(&magic, &magic_bits, 4);
    float x;
    std::memcpy(&x, &f, 4);
    x += magic;
    uint32_t r;
    std::memcpy(&r, &x, 4);
    return static_cast<uint16_t>(sign | (r - magic_bits));
  }
  const uint32_t odd = (f >> 13) & 1u;
  f += 0xc8000fffu + odd;  // rebias the exponent (127 -> 15) and round to nearest even
  return static_cast<uint16_t>(sign | (f >> 13));
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t f;
  if (exp == 0x1f) {
    f = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    f = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    f = sign;
  } else {  // subnormal: mant x 2^-24, exact in float
    float v = static_cast<float>(mant) * (1.0f / 16777216.0f);
    std::memcpy(&f, &v, 4);
    f |= sign;
  }
  float out;
  std::memcpy(&out, &f, 4);
  return out;
}

}  // namespace cm
