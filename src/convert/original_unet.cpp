// The original UNetModel (openai/consistency_models, cm/unet.py) as its state dict shows it:
//   input_blocks.0.0                 conv_in
//   input_blocks.k.0 [.1]            a ResBlock [+ AttentionBlock], num_res_blocks per level, then
//                                    one downsampler per level but the last (a ResBlock when
//                                    resblock_updown, else Downsample's conv `op`)
//   middle_block.0/1/2               ResBlock, AttentionBlock, ResBlock
//   output_blocks.k.0 [.1] [.1|.2]   num_res_blocks + 1 ResBlocks per level, deepest first, each
//                                    [+ attention], the level's last one [+ an upsampler]
//   out.0 / out.2                    GroupNorm, conv
// The number of residual blocks per level is where the first upsampler sits; attention, channels,
// scale-shift (emb_layers' width is 2 x out_channels) and the kind of resampling follow from the
// keys and shapes, and every tensor's shape is checked against the architecture so inferred.
#include <algorithm>
#include <map>
#include <set>

#include "cm/convert.h"
#include "cm/error.h"

namespace cm {
namespace {

// Consumes the original state dict by name, checking shapes, and collects the diffusers one.
class Mapper {
 public:
  Mapper(PtStateDict original, const std::string& source)
      : original_(std::move(original)), source_(source) {
    static const char* kPrefixes[] = {"time_embed.",   "label_emb.",     "input_blocks.",
                                      "middle_block.", "output_blocks.", "out."};
    for (std::size_t i = 0; i < original_.size(); ++i) {
      const std::string& key = original_[i].first;
      const bool known = std::any_of(std::begin(kPrefixes), std::end(kPrefixes),
                                     [&](const char* p) { return key.rfind(p, 0) == 0; });
      if (!known) unexpected(key);
      index_.emplace(key, i);
    }
  }

  [[noreturn]] void fail(const std::string& what) const { throw Error(source_ + ": " + what); }
  [[noreturn]] void unexpected(const std::string& key) const {
    fail("unexpected key '" + key +
         "' (the first one that is not the original repository's UNetModel)");
  }

  bool has(const std::string& key) const { return index_.count(key) > 0; }
  std::size_t size() const { return original_.size(); }
  const std::vector<int64_t>& shape(const std::string& key) const {
    const auto it = index_.find(key);
    if (it == index_.end()) fail("missing key '" + key + "' of the original UNetModel");
    return original_[it->second].second.shape;
  }
  int64_t dim(const std::string& key, std::size_t d) const {
    const auto& s = shape(key);
    if (d >= s.size()) fail("'" + key + "' has shape " + shape_text(s) + ", too few dimensions");
    return s[d];
  }

  // Moves `from` to `to` after checking its shape. Trailing 1s of a 1x1 convolution used as a
  // linear layer (qkv, proj_out) are dropped when `want` is shorter.
  void move(const std::string& from, const std::string& to, const std::vector<int64_t>& want) {
    PtTensor t = take(from, want);
    t.shape = want;
    out_.emplace_back(to, std::move(t));
  }

  // The original's qkv 1x1 convolution, output channels ordered (q|k|v) x heads x head_dim: each
  // third is one of diffusers' to_q / to_k / to_v.
  void split_qkv(const std::string& from, const std::string& to, int64_t channels, bool bias) {
    const std::vector<int64_t> want =
        bias ? std::vector<int64_t>{3 * channels} : std::vector<int64_t>{3 * channels, channels};
    const PtTensor t = take(from, want);
    const std::size_t third = t.data.size() / 3;
    const char* names[] = {"to_q", "to_k", "to_v"};
    for (int k = 0; k < 3; ++k) {
      PtTensor part;
      part.dtype = t.dtype;
      part.shape = want;
      part.shape[0] = channels;
      part.data.assign(t.data.begin() + k * third, t.data.begin() + (k + 1) * third);
      out_.emplace_back(to + "." + names[k] + (bias ? ".bias" : ".weight"), std::move(part));
    }
  }

  // Every original key must have been used.
  std::vector<std::pair<std::string, PtTensor>> finish() {
    for (const auto& [key, tensor] : original_) {
      if (!used_.count(key)) unexpected(key);
    }
    return std::move(out_);
  }

  static std::string shape_text(const std::vector<int64_t>& s) {
    std::string t = "[";
    for (std::size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
    return t + "]";
  }

 private:
  PtTensor take(const std::string& key, const std::vector<int64_t>& want) {
    const auto& s = shape(key);
    std::vector<int64_t> squeezed = s;
    while (squeezed.size() > want.size() && squeezed.back() == 1) squeezed.pop_back();
    if (squeezed != want)
      fail("'" + key + "' has shape " + shape_text(s) +
           " where the architecture read from the "
           "other weights needs " +
           shape_text(want));
    if (!used_.insert(key).second) fail("'" + key + "' used twice");
    return std::move(original_[index_.at(key)].second);
  }

  PtStateDict original_;
  const std::string& source_;
  std::map<std::string, std::size_t> index_;
  std::set<std::string> used_;
  std::vector<std::pair<std::string, PtTensor>> out_;
};

enum class Part { kNone, kResBlock, kAttention, kConvUp, kConvDown };

Part part(const Mapper& m, const std::string& prefix) {
  if (m.has(prefix + ".in_layers.0.weight")) return Part::kResBlock;
  if (m.has(prefix + ".qkv.weight")) return Part::kAttention;
  if (m.has(prefix + ".conv.weight")) return Part::kConvUp;
  if (m.has(prefix + ".op.weight")) return Part::kConvDown;
  return Part::kNone;
}

// How many blocks `prefix`.0, .1, ... there are, given that some key starts with each.
int count_blocks(const PtStateDict& sd, const std::string& prefix) {
  int n = 0;
  for (const auto& [key, t] : sd) {
    if (key.rfind(prefix, 0) != 0) continue;
    const std::string rest = key.substr(prefix.size());
    const auto dot = rest.find('.');
    try {
      n = std::max(n, std::stoi(rest.substr(0, dot)) + 1);
    } catch (const std::exception&) {
      // Not a number: left for the unexpected-key check to name.
    }
  }
  return n;
}

struct Architecture {
  int64_t c0 = 0, temb = 0, in_channels = 0, out_channels = 0;
  int levels = 0, res_blocks = 0;
  std::vector<int64_t> channels;
  std::vector<bool> attention;
  bool scale_shift = false;
  std::string downsample_type = "conv", upsample_type = "conv";
};

class Converter {
 public:
  Converter(PtStateDict original, const ConvertOptions& options, const std::string& source)
      : counts_{count_blocks(original, "input_blocks."), count_blocks(original, "output_blocks.")},
        m_(std::move(original), source),
        options_(options) {}

  ConvertedUNet run() {
    read_architecture();
    ConvertedUNet out;
    out.config = config(out);
    map_weights();
    out.weights = m_.finish();
    return out;
  }

 private:
  void read_architecture() {
    a_.c0 = m_.dim("input_blocks.0.0.weight", 0);
    a_.in_channels = m_.dim("input_blocks.0.0.weight", 1);
    a_.temb = m_.dim("time_embed.0.weight", 0);
    a_.out_channels = m_.dim("out.2.weight", 0);
    if (a_.temb != 4 * a_.c0)
      m_.fail("time_embed.0.weight is " + Mapper::shape_text(m_.shape("time_embed.0.weight")) +
              ": UNet2DModel needs a time embedding 4 x model_channels wide");
    const int n_out = counts_.second;
    // Every block holds at least one tensor: more blocks than tensors means a gap in the numbering.
    if (static_cast<std::size_t>(std::max(counts_.first, n_out)) > m_.size())
      m_.fail("block numbers run past the number of tensors (" + std::to_string(m_.size()) + ")");
    // The first output block with an upsampler closes the deepest level.
    int per_level = n_out;
    for (int k = 0; k < n_out; ++k) {
      const std::string p = "output_blocks." + std::to_string(k);
      if (part(m_, p + ".1") == Part::kResBlock || part(m_, p + ".1") == Part::kConvUp ||
          part(m_, p + ".2") != Part::kNone) {
        per_level = k + 1;
        break;
      }
    }
    if (per_level < 2 || n_out % per_level != 0)
      m_.fail("output_blocks.* do not form levels of num_res_blocks + 1 blocks (" +
              std::to_string(n_out) + " blocks, the first upsampler in block " +
              std::to_string(per_level - 1) + ")");
    a_.res_blocks = per_level - 1;
    a_.levels = n_out / per_level;
    if (counts_.first != 1 + a_.levels * a_.res_blocks + a_.levels - 1)
      m_.fail("input_blocks.* has " + std::to_string(counts_.first) + " blocks where " +
              std::to_string(a_.levels) + " levels of " + std::to_string(a_.res_blocks) +
              " residual blocks need " +
              std::to_string(1 + a_.levels * a_.res_blocks + a_.levels - 1));
    const int64_t emb_width = m_.dim(down_block(0, 0) + ".0.emb_layers.1.weight", 0);
    for (int l = 0; l < a_.levels; ++l) {
      a_.channels.push_back(m_.dim(down_block(l, 0) + ".0.in_layers.2.weight", 0));
      a_.attention.push_back(part(m_, down_block(l, 0) + ".1") == Part::kAttention);
      if (l + 1 < a_.levels) {
        const Part down = part(m_, down_block(l, a_.res_blocks) + ".0");
        const std::string type = down == Part::kResBlock   ? "resnet"
                                 : down == Part::kConvDown ? "conv"
                                                           : "";
        if (type.empty()) m_.fail("no downsampler in " + down_block(l, a_.res_blocks));
        if (l > 0 && type != a_.downsample_type) m_.fail("levels downsample in different ways");
        a_.downsample_type = type;
      }
    }
    for (int i = 0; i + 1 < a_.levels; ++i) {
      const Part up = upsampler_part(i);
      const std::string type = up == Part::kResBlock ? "resnet" : up == Part::kConvUp ? "conv" : "";
      if (type.empty()) m_.fail("no upsampler in " + up_block(i, a_.res_blocks));
      if (i > 0 && type != a_.upsample_type) m_.fail("levels upsample in different ways");
      a_.upsample_type = type;
    }
    const int64_t c_first = a_.channels.front();
    if (emb_width == 2 * c_first) {
      a_.scale_shift = true;
    } else if (emb_width != c_first) {
      m_.fail(down_block(0, 0) + ".0.emb_layers.1.weight has " + std::to_string(emb_width) +
              " outputs: neither out_channels (" + std::to_string(c_first) +
              ") nor twice that (use_scale_shift_norm)");
    }
  }

  std::string down_block(int level, int j) const {
    return "input_blocks." + std::to_string(1 + level * (a_.res_blocks + 1) + j);
  }
  std::string up_block(int i, int j) const {
    return "output_blocks." + std::to_string(i * (a_.res_blocks + 1) + j);
  }
  // Up-block i (deepest first) ends with an upsampler, after its attention when it has one.
  Part upsampler_part(int i) const {
    const std::string p = up_block(i, a_.res_blocks);
    const Part one = part(m_, p + ".1");
    return one == Part::kAttention ? part(m_, p + ".2") : one;
  }

  // The attention head width: given, or 64, or a quarter of the narrowest attention layer.
  int64_t head_channels() const {
    std::vector<int64_t> widths{a_.channels.back()};  // the middle block's
    for (int l = 0; l < a_.levels; ++l) {
      if (a_.attention[l]) widths.push_back(a_.channels[l]);
    }
    const int64_t narrowest = *std::min_element(widths.begin(), widths.end());
    const int64_t head = options_.num_head_channels ? *options_.num_head_channels
                                                    : std::min<int64_t>(64, narrowest / 4);
    for (const int64_t w : widths) {
      if (head <= 0 || w % head != 0)
        m_.fail("attention " + std::to_string(w) + " channels wide cannot have heads of " +
                std::to_string(head) + " channels; pass --num-head-channels");
    }
    return head;
  }

  int image_size(ConvertedUNet& out) const {
    if (options_.image_size) return *options_.image_size;
    // The original's create_model picks these multipliers from the image size when none are given.
    static const std::vector<std::pair<int, std::vector<int64_t>>> kDefaults = {
        {256, {1, 1, 2, 2, 4, 4}}, {128, {1, 1, 2, 3, 4}}, {64, {1, 2, 3, 4}}};
    std::vector<int64_t> mult;
    for (const int64_t c : a_.channels) mult.push_back(c % a_.c0 == 0 ? c / a_.c0 : -1);
    for (const auto& [size, defaults] : kDefaults) {
      if (mult == defaults) {
        out.image_size_inferred = true;
        return size;
      }
    }
    m_.fail("the weights do not say the image size (channel multipliers " +
            Mapper::shape_text(mult) +
            " are no default of the original repository); pass "
            "--image-size N");
  }

  UNetConfig config(ConvertedUNet& out) {
    UNetConfig c;
    c.sample_size = image_size(out);
    c.in_channels = static_cast<int>(a_.in_channels);
    c.out_channels = static_cast<int>(a_.out_channels);
    c.layers_per_block = a_.res_blocks;
    c.block_out_channels.assign(a_.channels.begin(), a_.channels.end());
    c.down_block_types.clear();
    c.up_block_types.clear();
    const bool down_resnet = a_.downsample_type == "resnet",
               up_resnet = a_.upsample_type == "resnet";
    for (int l = 0; l < a_.levels; ++l) {
      c.down_block_types.push_back(a_.attention[l] ? "AttnDownBlock2D"
                                   : down_resnet   ? "ResnetDownsampleBlock2D"
                                                   : "DownBlock2D");
      c.up_block_types.insert(c.up_block_types.begin(), a_.attention[l] ? "AttnUpBlock2D"
                                                        : up_resnet     ? "ResnetUpsampleBlock2D"
                                                                        : "UpBlock2D");
    }
    c.downsample_type = a_.downsample_type;
    c.upsample_type = a_.upsample_type;
    out.num_head_channels = static_cast<int>(head_channels());
    c.attention_head_dim = out.num_head_channels;
    c.norm_num_groups = 32;  // the original's GroupNorm32 everywhere
    c.resnet_time_scale_shift = a_.scale_shift ? "scale_shift" : "default";
    // diffusers leaves the middle block's attention without a norm under scale-shift unless told
    // otherwise; the original always has one.
    if (a_.scale_shift) c.attn_norm_num_groups = 32;
    if (m_.has("label_emb.weight"))
      c.num_class_embeds = static_cast<int>(m_.dim("label_emb.weight", 0));
    for (const int64_t ch : a_.channels) {
      if (ch % 32 != 0)
        m_.fail("a level of " + std::to_string(ch) +
                " channels: GroupNorm32 needs multiples of 32");
    }
    c.validate("converted UNet config");
    return c;
  }

  void map_resnet(const std::string& from, const std::string& to, int64_t in, int64_t out) {
    const int64_t proj = a_.scale_shift ? 2 * out : out;
    m_.move(from + ".in_layers.0.weight", to + ".norm1.weight", {in});
    m_.move(from + ".in_layers.0.bias", to + ".norm1.bias", {in});
    m_.move(from + ".in_layers.2.weight", to + ".conv1.weight", {out, in, 3, 3});
    m_.move(from + ".in_layers.2.bias", to + ".conv1.bias", {out});
    m_.move(from + ".emb_layers.1.weight", to + ".time_emb_proj.weight", {proj, a_.temb});
    m_.move(from + ".emb_layers.1.bias", to + ".time_emb_proj.bias", {proj});
    m_.move(from + ".out_layers.0.weight", to + ".norm2.weight", {out});
    m_.move(from + ".out_layers.0.bias", to + ".norm2.bias", {out});
    m_.move(from + ".out_layers.3.weight", to + ".conv2.weight", {out, out, 3, 3});
    m_.move(from + ".out_layers.3.bias", to + ".conv2.bias", {out});
    if (in != out) {
      m_.move(from + ".skip_connection.weight", to + ".conv_shortcut.weight", {out, in, 1, 1});
      m_.move(from + ".skip_connection.bias", to + ".conv_shortcut.bias", {out});
    }
  }

  void map_attention(const std::string& from, const std::string& to, int64_t c) {
    m_.move(from + ".norm.weight", to + ".group_norm.weight", {c});
    m_.move(from + ".norm.bias", to + ".group_norm.bias", {c});
    m_.split_qkv(from + ".qkv.weight", to, c, false);
    m_.split_qkv(from + ".qkv.bias", to, c, true);
    m_.move(from + ".proj_out.weight", to + ".to_out.0.weight", {c, c});
    m_.move(from + ".proj_out.bias", to + ".to_out.0.bias", {c});
  }

  void map_resampler(const std::string& from, const std::string& to, int64_t c, Part kind) {
    if (kind == Part::kResBlock) return map_resnet(from, to, c, c);
    const std::string conv = kind == Part::kConvDown ? ".op" : ".conv";
    m_.move(from + conv + ".weight", to + ".conv.weight", {c, c, 3, 3});
    m_.move(from + conv + ".bias", to + ".conv.bias", {c});
  }

  void map_weights() {
    const int64_t c0 = a_.c0;
    m_.move("time_embed.0.weight", "time_embedding.linear_1.weight", {a_.temb, c0});
    m_.move("time_embed.0.bias", "time_embedding.linear_1.bias", {a_.temb});
    m_.move("time_embed.2.weight", "time_embedding.linear_2.weight", {a_.temb, a_.temb});
    m_.move("time_embed.2.bias", "time_embedding.linear_2.bias", {a_.temb});
    if (m_.has("label_emb.weight"))
      m_.move("label_emb.weight", "class_embedding.weight",
              {m_.dim("label_emb.weight", 0), a_.temb});
    m_.move("input_blocks.0.0.weight", "conv_in.weight", {c0, a_.in_channels, 3, 3});
    m_.move("input_blocks.0.0.bias", "conv_in.bias", {c0});

    // The channels of each skip connection, as the original's input_block_chans stack.
    std::vector<int64_t> skips{c0};
    int64_t ch = c0;
    for (int l = 0; l < a_.levels; ++l) {
      const std::string to = "down_blocks." + std::to_string(l);
      for (int j = 0; j < a_.res_blocks; ++j) {
        const std::string from = down_block(l, j);
        map_resnet(from + ".0", to + ".resnets." + std::to_string(j), ch, a_.channels[l]);
        ch = a_.channels[l];
        if (a_.attention[l])
          map_attention(from + ".1", to + ".attentions." + std::to_string(j), ch);
        skips.push_back(ch);
      }
      if (l + 1 < a_.levels) {
        const std::string from = down_block(l, a_.res_blocks) + ".0";
        map_resampler(from, to + ".downsamplers.0", ch, part(m_, from));
        skips.push_back(ch);
      }
    }

    map_resnet("middle_block.0", "mid_block.resnets.0", ch, ch);
    map_attention("middle_block.1", "mid_block.attentions.0", ch);
    map_resnet("middle_block.2", "mid_block.resnets.1", ch, ch);

    for (int i = 0; i < a_.levels; ++i) {
      const int level = a_.levels - 1 - i;
      const std::string to = "up_blocks." + std::to_string(i);
      for (int j = 0; j <= a_.res_blocks; ++j) {
        const std::string from = up_block(i, j);
        const int64_t skip = skips.back();
        skips.pop_back();
        map_resnet(from + ".0", to + ".resnets." + std::to_string(j), ch + skip,
                   a_.channels[level]);
        ch = a_.channels[level];
        if (a_.attention[level])
          map_attention(from + ".1", to + ".attentions." + std::to_string(j), ch);
      }
      if (i + 1 < a_.levels) {
        const std::string from = up_block(i, a_.res_blocks) + (a_.attention[level] ? ".2" : ".1");
        map_resampler(from, to + ".upsamplers.0", ch, part(m_, from));
      }
    }

    m_.move("out.0.weight", "conv_norm_out.weight", {c0});
    m_.move("out.0.bias", "conv_norm_out.bias", {c0});
    m_.move("out.2.weight", "conv_out.weight", {a_.out_channels, c0, 3, 3});
    m_.move("out.2.bias", "conv_out.bias", {a_.out_channels});
  }

  std::pair<int, int> counts_;  // input and output blocks
  Mapper m_;
  const ConvertOptions& options_;
  Architecture a_;
};

}  // namespace

ConvertedUNet convert_original_unet(PtStateDict original, const ConvertOptions& options,
                                    const std::string& source) {
  return Converter(std::move(original), options, source).run();
}

}  // namespace cm
