// POST /v1/images/edits: a multipart form to a zero-shot edit request. The image handling follows
// cm edit's (tools/cm/edit.cpp): resized to the model's size unless superres takes a small image
// as it is; the checks of the edit itself stay in cm::edit, which names the option at fault.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <random>
#include <set>

#include "cm/image_io.h"
#include "server/http_api.h"

namespace cm::server {

namespace {

[[noreturn]] void refuse(const std::string& param, const std::string& message) {
  throw ApiError{400, param + ": " + message, param};
}

const std::string* field(const Form& form, const std::string& name) {
  const auto it = form.fields.find(name);
  return it == form.fields.end() || it->second.empty() ? nullptr : &it->second;
}

std::string shown(const std::string& text) {
  return text.size() > 32 ? text.substr(0, 32) + "..." : text;
}

int64_t form_integer(const std::string& text, const std::string& param, int64_t lo, int64_t hi) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size())
    refuse(param, "must be an integer, got '" + shown(text) + "'");
  if (v < lo || v > hi)
    refuse(param, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                      ", got " + text);
  return v;
}

double form_number(const std::string& text, const std::string& param, double lo, double hi) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || !std::isfinite(v))
    refuse(param, "must be a number, got '" + shown(text) + "'");
  if (v < lo || v > hi)
    refuse(param, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                      ", got " + text);
  return v;
}

// "22,0", "[22, 0]" or "22 0": descending training-grid indices.
std::vector<int64_t> form_timesteps(std::string text, int grid) {
  for (char& c : text)
    if (c == '[' || c == ']' || c == ',') c = ' ';
  std::vector<int64_t> out;
  size_t i = 0;
  while (i < text.size()) {
    if (std::isspace(static_cast<unsigned char>(text[i]))) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    out.push_back(form_integer(text.substr(i, j - i), "timesteps", 0, grid - 1));
    if (out.size() > 1 && out.back() >= out[out.size() - 2])
      refuse("timesteps", "must be strictly descending");
    i = j;
  }
  if (out.empty()) refuse("timesteps", "must list at least one timestep");
  return out;
}

bool form_flag(const std::string& text, const std::string& param) {
  std::string t = text;
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t == "true" || t == "1") return true;
  if (t == "false" || t == "0") return false;
  refuse(param, "must be true or false, got '" + shown(text) + "'");
}

// The PNG's or JPEG's size from its header, so that a small file claiming a huge image is refused
// before anything is allocated for it.
void check_upload_size(const std::string& bytes, const std::string& param) {
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  if (bytes.size() >= 24 && b[0] == 0x89 && b[1] == 'P') {
    const auto be32 = [&](size_t at) {
      return (uint64_t{b[at]} << 24) | (uint64_t{b[at + 1]} << 16) | (uint64_t{b[at + 2]} << 8) |
             uint64_t{b[at + 3]};
    };
    const uint64_t w = be32(16), h = be32(20);
    if (w * h > static_cast<uint64_t>(kMaxUploadPixels))
      refuse(param, std::to_string(w) + "x" + std::to_string(h) + " is larger than the " +
                        std::to_string(kMaxUploadPixels) + " pixels an edit accepts");
  }
}

ImageU8 decode_upload(const Form& form, const std::string& param) {
  const auto it = form.files.find(param);
  if (it == form.files.end() || it->second.empty()) return {};
  check_upload_size(it->second, param);
  try {
    ImageU8 image = decode_image(std::vector<uint8_t>(it->second.begin(), it->second.end()), param);
    if (static_cast<int64_t>(image.width) * image.height > kMaxUploadPixels)
      refuse(param, "larger than the " + std::to_string(kMaxUploadPixels) +
                        " pixels an edit accepts");
    return image;
  } catch (const Error& e) {
    refuse(param, std::string("not a readable PNG or JPEG (") + e.what() + ")");
  }
}

bool has_transparency(const ImageU8& image) {
  if (image.channels != 4) return false;  // decode_image gives gray, RGB or RGBA
  for (size_t i = image.channels - 1; i < image.pixels.size(); i += image.channels)
    if (image.pixels[i] < 128) return true;
  return false;
}

// White (>= 128) = regenerate, as cm edit's masks: gray as it is, colour by luminance; a mask with
// transparent pixels by OpenAI's convention (transparent = regenerate). A fully opaque RGBA mask,
// as a browser's canvas writes one, is read by its colour.
ImageU8 regenerate_mask(const ImageU8& mask) {
  if (!has_transparency(mask)) return convert_channels(mask, 1);
  ImageU8 out;
  out.width = mask.width;
  out.height = mask.height;
  out.channels = 1;
  out.pixels.resize(static_cast<size_t>(mask.width) * mask.height);
  for (size_t i = 0; i < out.pixels.size(); ++i)
    out.pixels[i] = mask.pixels[i * mask.channels + mask.channels - 1] < 128 ? 255 : 0;
  return out;
}

}  // namespace

ImageRequest parse_edit(const Form& form, const ModelInfo& model, int max_n) {
  static const std::set<std::string> known = {
      "image",        "image[]",       "mask",  "task",  "prompt", "n",      "seed",
      "steps",        "timesteps",     "sigma", "factor", "add_noise", "response_format",
      "output_format", "size",         "model", "user",   "class_labels"};
  for (const auto* parts : {&form.fields, &form.files})
    for (const auto& [name, value] : *parts)
      if (!known.count(name))
        refuse(name,
               "unknown field (known: image, mask, task, prompt, n, seed, steps, timesteps, "
               "sigma, factor, add_noise, class_labels, response_format, output_format, size, "
               "model, user)");

  auto o = std::make_shared<EditOptions>();
  ImageRequest r;
  Form uploads = form;
  if (!uploads.files.count("image") && uploads.files.count("image[]"))
    uploads.files["image"] = uploads.files["image[]"];
  o->image = decode_upload(uploads, "image");
  if (o->image.pixels.empty()) refuse("image", "required: a PNG or JPEG file part");
  ImageU8 mask = decode_upload(uploads, "mask");

  std::string task_name = "inpaint";
  if (const auto* t = field(form, "task")) task_name = *t;
  try {
    o->task = parse_edit_task(task_name);
  } catch (const Error&) {
    refuse("task", "'" + shown(task_name) +
                       "' is not an edit served here (inpaint, colorize, superres, stroke, denoise)");
  }
  if (o->task == EditTask::kInterpolate)
    refuse("task", "interpolate makes images from seeds, not from an image: use cm edit");

  if (const auto* v = field(form, "response_format"); v && *v != "b64_json")
    refuse("response_format", "only b64_json is supported, got '" + shown(*v) + "'");
  if (const auto* v = field(form, "output_format"); v && *v != "png")
    refuse("output_format", "only png is supported, got '" + shown(*v) + "'");
  const std::string size =
      std::to_string(model.sample_size) + "x" + std::to_string(model.sample_size);
  if (const auto* v = field(form, "size"); v && *v != size)
    refuse("size", "this model makes " + size + " images, got '" + shown(*v) + "'");
  if (const auto* v = field(form, "model"); v && *v != model.id)
    refuse("model", "'" + shown(*v) + "' is not served here (serving '" + model.id + "')");

  if (const auto* v = field(form, "n")) r.n = static_cast<int>(form_integer(*v, "n", 1, max_n));
  o->batch_size = r.n;
  if (const auto* v = field(form, "seed")) {
    r.seed = static_cast<uint64_t>(
        form_integer(*v, "seed", 0, std::numeric_limits<int64_t>::max()));
  } else {
    r.seed = std::random_device{}() & 0x7fffffffu;
  }
  o->seed = r.seed;
  if (field(form, "steps") && field(form, "timesteps"))
    refuse("timesteps", "give either steps or timesteps");
  if (const auto* v = field(form, "steps"))
    r.num_inference_steps =
        static_cast<int>(form_integer(*v, "steps", 1, model.num_train_timesteps));
  else
    r.num_inference_steps = 0;  // the task's default
  o->num_inference_steps = r.num_inference_steps;
  if (const auto* v = field(form, "timesteps"))
    o->timesteps = r.timesteps = form_timesteps(*v, model.num_train_timesteps);
  if (const auto* v = field(form, "sigma")) {
    if (o->task != EditTask::kDenoise) refuse("sigma", "only for task denoise");
    o->sigma = form_number(*v, "sigma", 0, 1e4);
  }
  if (const auto* v = field(form, "add_noise")) {
    if (o->task != EditTask::kDenoise) refuse("add_noise", "only for task denoise");
    o->add_noise = form_flag(*v, "add_noise");
  }
  if (const auto* v = field(form, "factor")) {
    if (o->task != EditTask::kSuperres) refuse("factor", "only for task superres");
    o->factor = static_cast<int>(form_integer(*v, "factor", 2, model.sample_size));
  }

  const std::string prompt = field(form, "prompt") ? *field(form, "prompt") : "";
  if (!model.num_classes) {
    if (!prompt.empty()) refuse("prompt", "the model is unconditional: leave it empty");
    if (field(form, "class_labels")) refuse("class_labels", "the model is not class-conditional");
  } else if (const auto* v = field(form, "class_labels")) {
    if (!prompt.empty()) refuse("class_labels", "give either a prompt or class_labels");
    r.class_labels = {form_integer(*v, "class_labels", 0, *model.num_classes - 1)};
  } else if (!prompt.empty()) {
    r.class_labels = {class_from_prompt(prompt, model)};
  }
  o->class_labels = r.class_labels;

  // The mask: given, or the image's own transparency (OpenAI's convention).
  if (o->task == EditTask::kInpaint) {
    if (mask.pixels.empty() && has_transparency(o->image)) mask = o->image;
    if (mask.pixels.empty())
      refuse("mask", "required for inpaint (white or transparent = regenerate), unless the "
                     "image has transparent pixels");
    mask = regenerate_mask(mask);
    if (mask.width != o->image.width || mask.height != o->image.height)
      refuse("mask", std::to_string(mask.width) + "x" + std::to_string(mask.height) +
                         " but the image is " + std::to_string(o->image.width) + "x" +
                         std::to_string(o->image.height));
  } else if (!mask.pixels.empty()) {
    refuse("mask", "only for task inpaint");
  }

  // The model's size, as cm edit brings them (superres takes a small square image as it is).
  const int s = model.sample_size;
  const bool small_superres = o->task == EditTask::kSuperres && o->factor == 0 &&
                              o->image.width == o->image.height && o->image.width < s &&
                              s % o->image.width == 0;
  if (!small_superres && (o->image.width != s || o->image.height != s)) {
    o->image = resize_image(o->image, s, s);
    if (!mask.pixels.empty()) mask = resize_image(mask, s, s);
  }
  if (o->image.channels == 4) o->image = convert_channels(o->image, 3);  // colour, not alpha
  o->mask = std::move(mask);
  r.edit = std::move(o);
  return r;
}

std::vector<uint8_t> base64_decode(const std::string& text, const std::string& param) {
  size_t begin = 0;
  if (text.compare(0, 5, "data:") == 0) {
    const size_t comma = text.find(',');
    if (comma == std::string::npos || text.find(";base64", 0) > comma)
      refuse(param, "a data: URL must be base64 (data:image/png;base64,...)");
    begin = comma + 1;
  }
  std::vector<uint8_t> out;
  out.reserve((text.size() - begin) / 4 * 3);
  uint32_t acc = 0;
  int bits = 0;
  size_t padding = 0;
  for (size_t i = begin; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62;
    else if (c == '/' || c == '_') v = 63;
    else if (c == '=') {
      ++padding;
      continue;
    } else if (std::isspace(c)) {
      continue;
    } else {
      refuse(param, "not base64 (byte " + std::to_string(i - begin) + ")");
    }
    if (padding) refuse(param, "not base64 (data after '=')");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>((acc >> bits) & 0xFF));
    }
  }
  if (padding > 2 || bits >= 6) refuse(param, "not base64 (truncated)");
  return out;
}

}  // namespace cm::server
