#include "kernels/onednn_conv.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

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

// oneDNN's default scratchpad belongs to the thread that creates a primitive (thread-local, freed
// when that thread ends). Primitives here are made on one thread (a loader, a server's first
// caller) and run on others, so each call passes its own scratchpad instead.
dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// A call's scratchpad for a primitive, from LibTorch's allocator (kept alive by `holder`).
dnnl::memory scratchpad_for(const dnnl::memory::desc& desc, const at::Tensor& like,
                            at::Tensor& holder) {
  holder = at::empty({static_cast<int64_t>(std::max<size_t>(desc.get_size(), 1))},
                     like.options().dtype(at::kByte));
  return dnnl::memory(desc, engine(), holder.data_ptr());
}

// Channels-last and not also plain contiguous (a 1×1 image is both; its bytes are the same).
bool is_nhwc(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

}  // namespace

bool winograd_available() {
  static const bool available = [] {
    try {
      const dnnl::memory::desc any({1, 16, 8, 8}, Type::f32, Tag::any);
      const dnnl::convolution_forward::desc d(
          dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_winograd, any,
          dnnl::memory::desc({16, 16, 3, 3}, Type::f32, Tag::any), any, {1, 1}, {1, 1}, {1, 1});
      dnnl::convolution_forward::primitive_desc pd(d, engine());
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return available;
}

struct PackedConv2d::Impl {
  struct Primitive {
    dnnl::convolution_forward conv;
    dnnl::memory::desc src, dst, bias, weights;
    int64_t out_h, out_w;
    std::string name{};  // oneDNN's, e.g. "jit_wino_4x3:avx512_core"
    // Winograd: the kernel's own (blocked) activation layouts, and the reorders into and out of
    // them from the caller's src and dst.
    bool winograd = false;
    dnnl::memory::desc blocked_src{}, blocked_dst{};
    dnnl::reorder to_blocked{}, from_blocked{};
    // Each primitive's scratchpad (user mode: see user_scratchpad()).
    dnnl::memory::desc scratchpad{}, to_blocked_scratchpad{}, from_blocked_scratchpad{};
  };
  // n, h, w, NHWC, bias, and the caller's OpenMP threads: a primitive splits its work for the
  // threads there were when it was made and asks OpenMP for that many whenever it runs, so one
  // made for two threads ran on two even in a call that adaptive threads (cm/tuning.h) had
  // narrowed to one beside a busy process (26 ms a call where one thread takes 8).
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, int>;

  int64_t out, in, kernel, stride, padding;
  at::ScalarType type;
  bool channels_last;  // the weight was: outputs are NHWC then, whatever the input (as LibTorch)
  bool winograd = false;
  dnnl::memory weights;  // in the layout the last direct primitive run wanted
  // Winograd copies of the weights, one per layout a Winograd kernel asked for (one per image
  // size, see primitive()); oneDNN reorders into these layouts, never back out of them.
  std::vector<std::pair<dnnl::memory::desc, dnnl::memory>> winograd_weights;
  std::map<Key, Primitive> primitives;
  // Callers on several threads share one layer: primitives are added and weights reordered
  // under this, and a call runs whole (each uses every core anyway).
  std::mutex mutex;

  bool wants_winograd(int64_t oh, int64_t ow) const {
    return winograd && type == at::kFloat && kernel == 3 && stride == 1 && oh > 0 && ow > 0;
  }

  const Primitive& primitive(const at::Tensor& x, const at::Tensor& bias) {
    const bool nhwc = is_nhwc(x);
    const Key key{x.size(0), x.size(2), x.size(3), nhwc, bias.defined(), at::get_num_threads()};
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
    if (wants_winograd(oh, ow)) {
      // oneDNN's Winograd kernels take only their own blocked activation layout.
      try {
        auto winograd_desc = [&](int64_t n, const dnnl::memory::desc& weights) {
          return dnnl::convolution_forward::desc(
              dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_winograd,
              dnnl::memory::desc({n, in, x.size(2), x.size(3)}, t, Tag::any), weights, bias_desc,
              dnnl::memory::desc({n, out, oh, ow}, t, Tag::any), {stride, stride},
              {padding, padding}, {padding, padding});
        };
        // The weight layout oneDNN picks varies with the batch, and every layout is one more
        // copy of the weights (4x their size): each image size gets the one it picks for a batch
        // of kWinogradLayoutBatch, and batches whose kernel cannot take that one run direct.
        // Which kernel runs then depends on the call's shape alone, never on earlier calls.
        const dnnl::convolution_forward::primitive_desc layout(
            winograd_desc(kWinogradLayoutBatch, any_weights), engine());
        const dnnl::convolution_forward::primitive_desc pd(
            winograd_desc(x.size(0), layout.weights_desc()), user_scratchpad(), engine());
        // oneDNN's F(4×4, 3×3) kernel loses to the direct one on few tiles (measured on
        // ImageNet-64's layers, 2 threads: 0.8–1.07x at 16 tiles of 4×4, 1.2–1.6x at 32, 1.7–2.7x
        // at 64).
        const int64_t tiles = x.size(0) * ((oh + 3) / 4) * ((ow + 3) / 4);
        const std::string name = pd.impl_info_str();
        if (name.find("wino_4x3") == std::string::npos || tiles >= kWinogradMinTiles) {
          Primitive p{
              dnnl::convolution_forward(pd), src, dst, bias_desc, pd.weights_desc(), oh, ow};
          p.winograd = true;
          p.name = name;
          p.blocked_src = pd.src_desc();
          p.blocked_dst = pd.dst_desc();
          p.scratchpad = pd.scratchpad_desc();
          const dnnl::reorder::primitive_desc to_pd(engine(), src, engine(), p.blocked_src,
                                                    user_scratchpad());
          const dnnl::reorder::primitive_desc from_pd(engine(), p.blocked_dst, engine(), dst,
                                                      user_scratchpad());
          p.to_blocked = dnnl::reorder(to_pd);
          p.from_blocked = dnnl::reorder(from_pd);
          p.to_blocked_scratchpad = to_pd.scratchpad_desc();
          p.from_blocked_scratchpad = from_pd.scratchpad_desc();
          return primitives.emplace(key, std::move(p)).first->second;
        }
      } catch (const dnnl::error&) {
        // No Winograd kernel for this case on this CPU (channels, ISA): the direct one.
      }
    }
    const dnnl::convolution_forward::desc d(
        dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, any_weights,
        bias_desc, dst, {stride, stride}, {padding, padding}, {padding, padding});
    const dnnl::convolution_forward::primitive_desc pd(d, user_scratchpad(), engine());
    Primitive p{dnnl::convolution_forward(pd), src, dst, bias_desc, pd.weights_desc(), oh, ow};
    p.name = pd.impl_info_str();
    p.scratchpad = pd.scratchpad_desc();
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

  // The weights in a Winograd kernel's layout, made once (through the plain layout: oneDNN
  // reorders into Winograd layouts from plain ones only).
  dnnl::memory& winograd_weights_for(const dnnl::memory::desc& wanted) {
    for (auto& [desc, memory] : winograd_weights)
      if (desc == wanted) return memory;
    dnnl::memory plain({{out, in, kernel, kernel}, type_of(type), Tag::oihw}, engine());
    dnnl::reorder(weights, plain).execute(stream(), weights, plain);
    dnnl::memory next(wanted, engine());
    dnnl::reorder(plain, next).execute(stream(), plain, next);
    stream().wait();
    winograd_weights.emplace_back(wanted, next);
    return winograd_weights.back().second;
  }
};

PackedConv2d::PackedConv2d(const at::Tensor& weight, int64_t stride, int64_t padding,
                           const at::Tensor& first_input, const at::Tensor& bias, bool winograd)
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
  m.winograd = winograd;
  // The plain weight wrapped as it lies (OIHW, or OHWI for channels-last), then reordered once
  // into the layout the first input's primitive wants.
  const auto plain = m.channels_last ? weight : weight.contiguous();
  const dnnl::memory::desc plain_desc({m.out, m.in, m.kernel, m.kernel}, type_of(m.type),
                                      m.channels_last ? Tag::acdb : Tag::abcd);
  m.weights = dnnl::memory(plain_desc, engine(), plain.data_ptr());
  TORCH_CHECK(accepts(first_input), "PackedConv2d: unsupported input ", first_input.sizes());
  const auto& first = m.primitive(first_input, bias);
  if (first.winograd) {
    m.winograd_weights_for(first.weights);
  } else {
    m.ensure_weights(first.weights);
  }
  if (m.weights.get_data_handle() == plain.data_ptr()) {
    // The kernel takes the plain layout: keep a copy of our own, the caller frees the tensor.
    dnnl::memory own(plain_desc, engine());
    dnnl::reorder(m.weights, own).execute(stream(), m.weights, own);
    stream().wait();
    m.weights = own;
  }
}

PackedConv2d::~PackedConv2d() = default;

size_t PackedConv2d::weight_bytes() const {
  auto& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  size_t bytes = m.weights.get_desc().get_size();
  for (const auto& [desc, memory] : m.winograd_weights) bytes += desc.get_size();
  return bytes;
}

size_t PackedConv2d::primitive_count() const {
  auto& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  return m.primitives.size();
}

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
  const bool nhwc = is_nhwc(x);
  auto y = at::empty({x.size(0), m.out, p.out_h, p.out_w},
                     x.options().memory_format(nhwc ? at::MemoryFormat::ChannelsLast
                                                    : at::MemoryFormat::Contiguous));
  dnnl::memory src(p.src, engine(), x.data_ptr()), dst(p.dst, engine(), y.data_ptr());
  at::Tensor b;
  dnnl::memory bias_memory;
  if (bias.defined()) {
    b = bias.contiguous();
    bias_memory = dnnl::memory(p.bias, engine(), b.data_ptr());
  }
  if (p.winograd) {
    // Blocked copies of the activations, from LibTorch's allocator (64-byte aligned, cached).
    const auto bytes = [&](const dnnl::memory::desc& d) {
      return at::empty({static_cast<int64_t>(d.get_size())}, x.options().dtype(at::kByte));
    };
    const auto xb = bytes(p.blocked_src), yb = bytes(p.blocked_dst);
    dnnl::memory blocked_src(p.blocked_src, engine(), xb.data_ptr());
    dnnl::memory blocked_dst(p.blocked_dst, engine(), yb.data_ptr());
    at::Tensor pad_to, pad_conv, pad_from;
    p.to_blocked.execute(
        stream(), {{DNNL_ARG_FROM, src},
                   {DNNL_ARG_TO, blocked_src},
                   {DNNL_ARG_SCRATCHPAD, scratchpad_for(p.to_blocked_scratchpad, x, pad_to)}});
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, blocked_src},
        {DNNL_ARG_WEIGHTS, m.winograd_weights_for(p.weights)},
        {DNNL_ARG_DST, blocked_dst},
        {DNNL_ARG_SCRATCHPAD, scratchpad_for(p.scratchpad, x, pad_conv)}};
    if (bias.defined()) args.emplace(DNNL_ARG_BIAS, bias_memory);
    p.conv.execute(stream(), args);
    p.from_blocked.execute(
        stream(), {{DNNL_ARG_FROM, blocked_dst},
                   {DNNL_ARG_TO, dst},
                   {DNNL_ARG_SCRATCHPAD, scratchpad_for(p.from_blocked_scratchpad, x, pad_from)}});
    stream().wait();
    return y;
  }
  m.ensure_weights(p.weights);
  at::Tensor pad;
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, src},
      {DNNL_ARG_WEIGHTS, m.weights},
      {DNNL_ARG_DST, dst},
      {DNNL_ARG_SCRATCHPAD, scratchpad_for(p.scratchpad, x, pad)}};
  if (bias.defined()) args.emplace(DNNL_ARG_BIAS, bias_memory);
  p.conv.execute(stream(), args);
  stream().wait();
  return y;
}

std::string PackedConv2d::kernel_name(const at::Tensor& input, const at::Tensor& bias) {
  TORCH_CHECK(accepts(input), "PackedConv2d: unsupported input ", input.sizes());
  auto& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  const auto x = m.channels_last ? input.contiguous(at::MemoryFormat::ChannelsLast) : input;
  return m.primitive(x, bias).name;
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
