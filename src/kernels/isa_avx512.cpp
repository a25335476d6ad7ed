// The src/kernels loops for avx512; CMakeLists.txt compiles this file with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma.
#define CM_ISA avx512
#include "kernels/isa_impl.h"
