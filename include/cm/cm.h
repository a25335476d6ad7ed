/* consistency.cpp's C API: load a pipeline, generate and edit images into 8-bit buffers.
 *
 * For programs in C and for bindings (python/consistency_cpp.py uses it through ctypes). Link
 * libcm.so. Every function that can fail returns a cm_status; the message of the last failure on
 * the calling thread is cm_last_error(). A loaded pipeline may be used from several threads at
 * once (each call keeps its own state); images returned are owned by the caller until
 * cm_images_free. Parameter structs are filled with defaults by their *_init function: set
 * what you need after it, so that fields added later keep their defaults. */
#ifndef CM_CM_H
#define CM_CM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cm_status {
  CM_OK = 0,
  CM_ERROR_INVALID_ARGUMENT = 1, /* a parameter or file the library refused: see cm_last_error */
  CM_ERROR_CANCELLED = 2,        /* a progress callback asked to stop */
  CM_ERROR_INTERNAL = 3          /* anything else (out of memory, a LibTorch failure) */
} cm_status;

typedef enum cm_log_level { CM_LOG_INFO = 0, CM_LOG_WARNING = 1 } cm_log_level;

/* Messages the library has for a person (what was loaded, a dtype the CPU only emulates). */
typedef void (*cm_log_callback)(cm_log_level level, const char* message, void* user_data);
/* After each network evaluation: step counts from 1 to num_steps. Return nonzero to stop; the
 * call then fails with CM_ERROR_CANCELLED. */
typedef int (*cm_progress_callback)(int step, int num_steps, void* user_data);

/* The library version, e.g. "0.1.0". */
const char* cm_version(void);
/* The message of the last call that failed on this thread ("" if none). */
const char* cm_last_error(void);
/* Where log messages go: by default nowhere. Process-wide; NULL turns them off. */
void cm_set_log_callback(cm_log_callback callback, void* user_data);

typedef struct cm_pipeline cm_pipeline;

typedef struct cm_load_params {
  const char* dtype;  /* "float32" (default, exact), "bfloat16", "float16", "auto" */
  const char* device; /* "cpu" (default), "cuda", "cuda:N" */
} cm_load_params;
void cm_load_params_init(cm_load_params* params);

/* A diffusers pipeline folder or a bare UNet folder. */
cm_status cm_pipeline_load(const char* path, const cm_load_params* params, cm_pipeline** out);
void cm_pipeline_free(cm_pipeline* pipeline);
/* The model's image size and channels, and its class count (0: unconditional). */
void cm_pipeline_info(const cm_pipeline* pipeline, int* sample_size, int* channels,
                      int* num_classes);

/* Images, row-major: count × height × width × channels bytes; labels: count entries when the
 * model is class-conditional, else NULL. */
typedef struct cm_images {
  uint8_t* pixels;
  int count, height, width, channels;
  int64_t* class_labels;
} cm_images;
/* Frees what a generate or edit call put in `images` and zeroes it; NULL and zeroed are fine. */
void cm_images_free(cm_images* images);

typedef struct cm_generate_params {
  int batch_size;                /* default 1 */
  int num_inference_steps;       /* default 1 */
  const int64_t* timesteps;      /* explicit descending indices instead of the step count */
  size_t num_timesteps;
  const int64_t* class_labels;   /* none: random labels following the seed; one: for all */
  size_t num_class_labels;
  uint64_t seed;                 /* default 0: the same images as cm generate -s 0 */
  cm_progress_callback progress; /* optional */
  void* progress_user_data;
} cm_generate_params;
void cm_generate_params_init(cm_generate_params* params);
cm_status cm_generate(cm_pipeline* pipeline, const cm_generate_params* params, cm_images* out);

/* One 8-bit image: gray (1), RGB (3) or RGBA (4) channels, row-major. */
typedef struct cm_image_view {
  const uint8_t* pixels;
  int height, width, channels;
} cm_image_view;

typedef struct cm_edit_params {
  const char* task;        /* "inpaint" (default), "colorize", "superres", "stroke",
                              "interpolate", "denoise" (as cm edit) */
  cm_image_view image;     /* the reference (not used by interpolate) */
  cm_image_view mask;      /* inpaint: white = regenerate, black = keep; pixels NULL: none */
  int factor;              /* superres: patch size; 0: model size / image size */
  double sigma;            /* denoise: the image's noise level */
  int add_noise;           /* denoise: add sigma-scaled noise first */
  uint64_t seed2;          /* interpolate: the second seed (default 1) */
  int frames;              /* interpolate: frames (default 8) */
  int batch_size;          /* default 1 */
  int num_inference_steps; /* 0: the task's default */
  uint64_t seed;
  const int64_t* class_labels;
  size_t num_class_labels;
  cm_progress_callback progress;
  void* progress_user_data;
} cm_edit_params;
void cm_edit_params_init(cm_edit_params* params);
cm_status cm_edit(cm_pipeline* pipeline, const cm_edit_params* params, cm_images* out);

#ifdef __cplusplus
}
#endif

#endif /* CM_CM_H */
