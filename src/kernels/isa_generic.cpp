// The src/kernels loops for generic; CMakeLists.txt compiles this file with (none).
#define CM_ISA generic
#include "kernels/isa_impl.h"
