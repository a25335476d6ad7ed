// The src/kernels loops for avx2; CMakeLists.txt compiles this file with -mavx2 -mfma.
#define CM_ISA avx2
#include "kernels/isa_impl.h"
