#include "kernels/onednn_conv.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tuple>
#include <unordered_map>

namespace cm::kernels {
namespace {

using Tag = dnnl::memory::format_tag;
using Type = dnnl::memory::data_type;

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// In order, on the calling thread's OpenMP team (the one at::set_num_threads sizes).
dnnl::stream& stream() {
  static dnnl::stream s(engine());
  return s;
}

Type type_of(at::ScalarType t) { return t == at::kBFloat16 ? Type::bf16 : Type::f32; }

// Channels-last and not also plain contiguous (a 1×1 image is both; its bytes are the same).
bool is_nhwc(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

}  // namespace

struct PackedConv2d::Impl {
  struct Primitive {
    dnnl::convolution_forward conv;
    dnnl::memory::desc src, dst, bias, weights;
    int64_t out_h, out_w;
  };
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool>;  // n, h, w, NHWC, bias

  int64_t out, in, kernel, stride, padding;
  at::ScalarType type;
  bool channels_last;  // the weight was: outputs are NHWC then, whatever the input (as LibTorch)
  dnnl::memory weights;  // in the layout the last primitive run wanted
  std::map<Key, Primitive> primitives;
  // Callers on several threads share one layer: primitives are added and weights reordered
  // under this, and a call runs whole (each uses every core anyway).
  std::mutex mutex;

  const Primitive& primitive(const at::Tensor& x, const at::Tensor& bias) {
    const bool nhwc = is_nhwc(x);
    const Key key{x.size(0), x.size(2), x.size(3), nhwc, bias.defined()};
    auto it = primitives.find(key);
    if (it != primitives.end()) return it->second;
    const int64_t oh = (x.size(2) + 2 * padding - kernel) / stride + 1;
    const int64_t ow = (x.size(3) + 2 * padding - kernel) / stride + 1;
    const Tag layout = nhwc ? Tag::nhwc : Tag::nchw;
    const Type t = type_of(type);
    const dnnl::memory::desc src({x.size(0), in, x.size(2), x.size(3)}, t, layout);
    const dnnl::memory::desc dst({x.size(0), out, oh, ow}, t, layout);
    const dnnl::memory::desc any_weights({out, in, kernel, kernel}, t, Tag::any);
    const dnnl::memory::desc bias_desc =
        bias.defined() ? dnnl::memory::desc({out}, type_of(bias.scalar_type()), Tag::a)
                       : dnnl::memory::desc();
    const dnnl::convolution_forward::desc d(
        dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, any_weights,
        bias_desc, dst, {stride, stride}, {padding, padding}, {padding, padding});
    const dnnl::convolution_forward::primitive_desc pd(d, engine());
    Primitive p{dnnl::convolution_forward(pd), src, dst, bias_desc, pd.weights_desc(), oh, ow};
    return primitives.emplace(key, std::move(p)).first->second;
  }

  // Reorders the weights where a primitive wants another layout than the one they are in.
  void ensure_weights(const dnnl::memory::desc& wanted) {
    if (weights.get_desc() == wanted) return;
    dnnl::memory next(wanted, engine());
    dnnl::reorder(weights, next).execute(stream(), weights, next);
    stream().wait();
    weights = next;
  }
};

PackedConv2d::PackedConv2d(const at::Tensor& weight, int64_t stride, int64_t padding,
                           const at::Tensor& first_input, const at::Tensor& bias)
    : impl_(std::make_unique<Impl>()) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == weight.size(3) && weight.is_cpu() &&
                  (weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kBFloat16),
              "PackedConv2d: expected a square float32/bfloat16 CPU kernel, got ", weight.sizes());
  auto& m = *impl_;
  m.out = weight.size(0);
  m.in = weight.size(1);
  m.kernel = weight.size(2);
  m.stride = stride;
  m.padding = padding;
  m.type = weight.scalar_type();
  m.channels_last = is_nhwc(weight);
  // The plain weight wrapped as it lies (OIHW, or OHWI for channels-last), then reordered once
  // into the layout the first input's primitive wants.
  const auto plain = m.channels_last ? weight : weight.contiguous();
  const dnnl::memory::desc plain_desc({m.out, m.in, m.kernel, m.kernel}, type_of(m.type),
                                      m.channels_last ? Tag::acdb : Tag::abcd);
  m.weights = dnnl::memory(plain_desc, engine(), plain.data_ptr());
  TORCH_CHECK(accepts(first_input), "PackedConv2d: unsupported input ", first_input.sizes());
  m.ensure_weights(m.primitive(first_input, bias).weights);
  if (m.weights.get_data_handle() == plain.data_ptr()) {
    // The kernel takes the plain layout: keep a copy of our own, the caller frees the tensor.
    dnnl::memory own(plain_desc, engine());
    dnnl::reorder(m.weights, own).execute(stream(), m.weights, own);
    stream().wait();
    m.weights = own;
  }
}

PackedConv2d::~PackedConv2d() = default;

bool PackedConv2d::accepts(const at::Tensor& x) const {
  return x.dim() == 4 && x.is_cpu() && x.scalar_type() == impl_->type &&
         x.size(1) == impl_->in && x.numel() > 0 &&
         (x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast));
}

at::Tensor PackedConv2d::forward(const at::Tensor& input, const at::Tensor& bias) {
  RECORD_FUNCTION("cm::onednn_conv2d", std::vector<c10::IValue>{input});  // named in profiles
  TORCH_CHECK(accepts(input), "PackedConv2d: unsupported input ", input.sizes(), " ",
              input.scalar_type());
  auto& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  // LibTorch's rule: channels-last if the input or the weight is. An NCHW input to an NHWC model
  // (its 3-channel sample) is converted here, or every later layer would run NCHW too.
  const auto x = m.channels_last ? input.contiguous(at::MemoryFormat::ChannelsLast) : input;
  const auto& p = m.primitive(x, bias);
  m.ensure_weights(p.weights);
  const bool nhwc = is_nhwc(x);
  auto y = at::empty({x.size(0), m.out, p.out_h, p.out_w},
                     x.options().memory_format(nhwc ? at::MemoryFormat::ChannelsLast
                                                    : at::MemoryFormat::Contiguous));
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, dnnl::memory(p.src, engine(), x.data_ptr())},
      {DNNL_ARG_WEIGHTS, m.weights},
      {DNNL_ARG_DST, dnnl::memory(p.dst, engine(), y.data_ptr())}};
  at::Tensor b;
  if (bias.defined()) {
    b = bias.contiguous();
    args.emplace(DNNL_ARG_BIAS, dnnl::memory(p.bias, engine(), b.data_ptr()));
  }
  p.conv.execute(stream(), args);
  stream().wait();
  return y;
}

at::Tensor PackedConv2d::dense(at::MemoryFormat format) const {
  auto& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  auto w = at::empty({m.out, m.in, m.kernel, m.kernel},
                     at::TensorOptions().dtype(m.type).memory_format(format));
  const bool cl = format == at::MemoryFormat::ChannelsLast;
  dnnl::memory plain({{m.out, m.in, m.kernel, m.kernel}, type_of(m.type), cl ? Tag::acdb : Tag::abcd},
                     engine(), w.data_ptr());
  dnnl::memory source = m.weights;
  dnnl::reorder(source, plain).execute(stream(), source, plain);
  stream().wait();
  return w;
}

}  // namespace cm::kernels
