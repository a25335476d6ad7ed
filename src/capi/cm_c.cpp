// The C API (include/cm/cm.h) over the C++ library: exceptions become status codes and a
// thread-local message, tensors become malloc'd 8-bit buffers.
#include "cm/cm.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include "cm/dtype.h"
#include "cm/editing.h"
#include "cm/error.h"
#include "cm/output.h"
#include "cm/pipeline.h"
#include "cm/version.h"

struct cm_pipeline {
  std::unique_ptr<cm::ConsistencyModelPipeline> pipe;
};

namespace {

thread_local std::string t_last_error;

std::mutex g_log_mutex;
cm_log_callback g_log = nullptr;
void* g_log_user = nullptr;

void log(cm_log_level level, const std::string& message) {
  std::lock_guard<std::mutex> lock(g_log_mutex);
  if (g_log) g_log(level, message.c_str(), g_log_user);
}

struct Stopped {};  // thrown from a step callback when the progress callback says stop

// Runs `body`, turning every exception into a status and the thread's last error.
template <class F>
cm_status guarded(F&& body) {
  try {
    t_last_error.clear();
    body();
    return CM_OK;
  } catch (const Stopped&) {
    t_last_error = "stopped by the progress callback";
    return CM_ERROR_CANCELLED;
  } catch (const cm::Error& e) {
    t_last_error = e.what();
    return CM_ERROR_INVALID_ARGUMENT;
  } catch (const std::bad_alloc&) {
    t_last_error = "out of memory";
    return CM_ERROR_INTERNAL;
  } catch (const std::exception& e) {
    t_last_error = e.what();
    return CM_ERROR_INTERNAL;
  } catch (...) {
    t_last_error = "unknown error";
    return CM_ERROR_INTERNAL;
  }
}

void require(bool ok, const char* what) {
  if (!ok) throw cm::Error(what);
}

cm::StepCallback progress_of(cm_progress_callback progress, void* user) {
  if (!progress) return {};
  return [progress, user](int step, int num_steps, double, const at::Tensor&) {
    if (progress(step + 1, num_steps, user) != 0) throw Stopped{};
  };
}

std::vector<int64_t> labels_of(const int64_t* labels, size_t count) {
  require(labels || count == 0, "class_labels: NULL with num_class_labels > 0");
  return std::vector<int64_t>(labels, labels + count);
}

cm::ImageU8 image_of(const cm_image_view& v, const char* name) {
  cm::ImageU8 image;
  if (!v.pixels) return image;
  if (v.height <= 0 || v.width <= 0 || !(v.channels == 1 || v.channels == 3 || v.channels == 4))
    throw cm::Error(std::string(name) +
                    ": height and width must be positive and channels 1, 3 or " + "4, got " +
                    std::to_string(v.height) + "x" + std::to_string(v.width) + "x" +
                    std::to_string(v.channels));
  image.height = v.height;
  image.width = v.width;
  image.channels = v.channels;
  image.pixels.assign(v.pixels, v.pixels + size_t(v.height) * v.width * v.channels);
  return image;
}

// [B, H, W, C] float in [0, 1] to the caller's buffers (rounded as cm generate's PNGs).
void fill(const at::Tensor& images, const std::vector<int64_t>& labels, cm_images* out) {
  const at::Tensor u8 = cm::images_to_uint8(images).contiguous();
  cm_images result{};
  result.count = static_cast<int>(u8.size(0));
  result.height = static_cast<int>(u8.size(1));
  result.width = static_cast<int>(u8.size(2));
  result.channels = static_cast<int>(u8.size(3));
  const size_t bytes = static_cast<size_t>(u8.numel());
  result.pixels = static_cast<uint8_t*>(std::malloc(bytes));
  if (!result.pixels) throw std::bad_alloc();
  std::memcpy(result.pixels, u8.data_ptr<uint8_t>(), bytes);
  if (!labels.empty()) {
    result.class_labels = static_cast<int64_t*>(std::malloc(labels.size() * sizeof(int64_t)));
    if (!result.class_labels) {
      std::free(result.pixels);
      throw std::bad_alloc();
    }
    std::memcpy(result.class_labels, labels.data(), labels.size() * sizeof(int64_t));
  }
  *out = result;
}

}  // namespace

extern "C" {

const char* cm_version(void) {
  return CM_VERSION;
}

const char* cm_last_error(void) {
  return t_last_error.c_str();
}

void cm_set_log_callback(cm_log_callback callback, void* user_data) {
  std::lock_guard<std::mutex> lock(g_log_mutex);
  g_log = callback;
  g_log_user = user_data;
}

void cm_load_params_init(cm_load_params* params) {
  if (!params) return;
  params->dtype = "float32";
  params->device = "cpu";
}

cm_status cm_pipeline_load(const char* path, const cm_load_params* params, cm_pipeline** out) {
  return guarded([&] {
    require(path && out, "cm_pipeline_load: path and out must not be NULL");
    *out = nullptr;
    cm_load_params p;
    cm_load_params_init(&p);
    if (params) p = *params;
    cm::LoadOptions load;
    load.device = c10::Device(p.device ? p.device : "cpu");
    load.dtype = cm::resolve_dtype(p.dtype ? p.dtype : "float32", load.device);
    const std::string warning =
        cm::dtype_warning(load.dtype, load.device, cm::dtype_support(load.device));
    if (!warning.empty()) log(CM_LOG_WARNING, warning);
    const auto begin = std::chrono::steady_clock::now();
    auto handle = std::make_unique<cm_pipeline>();
    handle->pipe = std::make_unique<cm::ConsistencyModelPipeline>(
        cm::ConsistencyModelPipeline::from_pretrained(path, load));
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
    log(CM_LOG_INFO, std::string("loaded ") + path + " (" + cm::dtype_name(load.dtype) + ", " +
                         load.device.str() + ") in " + std::to_string(seconds).substr(0, 5) + " s");
    *out = handle.release();
  });
}

void cm_pipeline_free(cm_pipeline* pipeline) {
  delete pipeline;
}

void cm_pipeline_info(const cm_pipeline* pipeline, int* sample_size, int* channels,
                      int* num_classes) {
  if (!pipeline) return;
  const auto& config = pipeline->pipe->unet()->config();
  if (sample_size) *sample_size = config.sample_size;
  if (channels) *channels = config.out_channels;
  if (num_classes) *num_classes = config.num_class_embeds.value_or(0);
}

void cm_images_free(cm_images* images) {
  if (!images) return;
  std::free(images->pixels);
  std::free(images->class_labels);
  *images = cm_images{};
}

void cm_generate_params_init(cm_generate_params* params) {
  if (!params) return;
  *params = cm_generate_params{};
  params->batch_size = 1;
  params->num_inference_steps = 1;
}

cm_status cm_generate(cm_pipeline* pipeline, const cm_generate_params* params, cm_images* out) {
  return guarded([&] {
    require(pipeline && params && out, "cm_generate: pipeline, params and out must not be NULL");
    *out = cm_images{};
    require(params->timesteps || params->num_timesteps == 0,
            "timesteps: NULL with num_timesteps > 0");
    cm::GenerateOptions o;
    o.batch_size = params->batch_size;
    o.num_inference_steps = params->num_inference_steps;
    if (params->num_timesteps)
      o.timesteps.assign(params->timesteps, params->timesteps + params->num_timesteps);
    o.class_labels = labels_of(params->class_labels, params->num_class_labels);
    o.seed = params->seed;
    o.on_step = progress_of(params->progress, params->progress_user_data);
    const cm::GenerateResult r = (*pipeline->pipe)(o);
    fill(r.images, r.class_labels, out);
  });
}

void cm_edit_params_init(cm_edit_params* params) {
  if (!params) return;
  *params = cm_edit_params{};
  const cm::EditOptions defaults;
  params->task = "inpaint";
  params->seed2 = defaults.seed2;
  params->frames = defaults.frames;
  params->batch_size = defaults.batch_size;
}

cm_status cm_edit(cm_pipeline* pipeline, const cm_edit_params* params, cm_images* out) {
  return guarded([&] {
    require(pipeline && params && out, "cm_edit: pipeline, params and out must not be NULL");
    *out = cm_images{};
    cm::EditOptions o;
    o.task = cm::parse_edit_task(params->task ? params->task : "");
    o.image = image_of(params->image, "image");
    o.mask = image_of(params->mask, "mask");
    o.factor = params->factor;
    o.sigma = params->sigma;
    o.add_noise = params->add_noise != 0;
    o.seed2 = params->seed2;
    o.frames = params->frames;
    o.batch_size = params->batch_size;
    o.num_inference_steps = params->num_inference_steps;
    o.seed = params->seed;
    o.class_labels = labels_of(params->class_labels, params->num_class_labels);
    o.on_step = progress_of(params->progress, params->progress_user_data);
    const cm::EditResult r = cm::edit(*pipeline->pipe, o);
    fill(r.images, r.class_labels, out);
  });
}

}  // extern "C"
