// For tests: OpenBLAS's kernels chosen by name at run time (cm::tune_blas uses it).
#pragma once

namespace cm::detail {

// Re-selects OpenBLAS's kernels as OPENBLAS_CORETYPE=core would have at load; true when OpenBLAS
// now reports that core. Call only while no BLAS call runs.
bool select_blas_core(const char* core);

}  // namespace cm::detail
