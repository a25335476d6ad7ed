#include "kernels/softmax.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <vector>

namespace cm::kernels {
namespace {

template <typename T>
void run(const at::Tensor& x, at::Tensor& y, Isa isa) {
  const int64_t len = x.size(-1), rows = x.numel() / len;
  const T* xp = x.data_ptr<T>();
  T* yp = y.data_ptr<T>();
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / len), [&](int64_t r0, int64_t r1) {
    std::vector<float> scratch(len);
    CM_ISA_CALL(isa, softmax_rows, xp + r0 * len, yp + r0 * len, r1 - r0, len, scratch.data());
  });
}

}  // namespace

at::Tensor softmax_last_dim(const at::Tensor& x, Isa isa) {
  RECORD_FUNCTION("cm::softmax_last_dim", std::vector<c10::IValue>{x});  // named in profiles
  TORCH_CHECK(x.device().is_cpu() && x.dim() >= 1 &&
                  (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16),
              "softmax_last_dim: expected a CPU float32 or bfloat16 tensor, got ",
              x.scalar_type());
  const auto in = x.contiguous();
  auto y = at::empty(in.sizes(), in.options());
  if (in.numel() == 0) return y;
  if (in.scalar_type() == at::kFloat) {
    run<float>(in, y, isa);
  } else {
    run<c10::BFloat16>(in, y, isa);
  }
  return y;
}

}  // namespace cm::kernels
