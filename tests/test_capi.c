/* The C API from C: test_capi MODEL_DIR (the shipped Fashion-MNIST model). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm/cm.h"

static int failures = 0;

#define CHECK(cond)                                                 \
  do {                                                              \
    if (!(cond)) {                                                  \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                   \
    }                                                               \
  } while (0)

static int infos = 0;
static void on_log(cm_log_level level, const char* message, void* user) {
  (void)user;
  if (level == CM_LOG_INFO && strstr(message, "loaded ")) ++infos;
}

typedef struct Progress {
  int calls, last_step, last_total, stop_at;
} Progress;

static int on_progress(int step, int num_steps, void* user) {
  Progress* p = (Progress*)user;
  ++p->calls;
  p->last_step = step;
  p->last_total = num_steps;
  return p->stop_at > 0 && step >= p->stop_at;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: test_capi MODEL_DIR\n");
    return 2;
  }
  CHECK(strlen(cm_version()) > 0);
  CHECK(strcmp(cm_last_error(), "") == 0);

  /* A missing folder: an error code and a message naming it, no handle. */
  cm_pipeline* pipe = (cm_pipeline*)1;
  CHECK(cm_pipeline_load("/nonexistent/model", NULL, &pipe) == CM_ERROR_INVALID_ARGUMENT);
  CHECK(pipe == NULL);
  CHECK(strstr(cm_last_error(), "/nonexistent/model") != NULL);
  cm_load_params load;
  cm_load_params_init(&load);
  load.dtype = "float64";
  CHECK(cm_pipeline_load(argv[1], &load, &pipe) == CM_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(cm_last_error(), "float64") != NULL);

  cm_set_log_callback(on_log, NULL);
  CHECK(cm_pipeline_load(argv[1], NULL, &pipe) == CM_OK);
  cm_set_log_callback(NULL, NULL);
  CHECK(infos == 1);
  if (!pipe) return 1;
  int size = 0, channels = 0, classes = 0;
  cm_pipeline_info(pipe, &size, &channels, &classes);
  CHECK(size == 28 && channels == 1 && classes == 10);

  /* Two images of class 3, one step, with progress. */
  cm_generate_params g;
  cm_generate_params_init(&g);
  CHECK(g.batch_size == 1 && g.num_inference_steps == 1 && g.seed == 0);
  const int64_t label = 3;
  g.batch_size = 2;
  g.class_labels = &label;
  g.num_class_labels = 1;
  g.seed = 7;
  Progress progress = {0, 0, 0, 0};
  g.progress = on_progress;
  g.progress_user_data = &progress;
  cm_images a = {0}, b = {0}, c = {0};
  CHECK(cm_generate(pipe, &g, &a) == CM_OK);
  CHECK(a.count == 2 && a.height == 28 && a.width == 28 && a.channels == 1);
  CHECK(a.class_labels && a.class_labels[0] == 3 && a.class_labels[1] == 3);
  CHECK(progress.calls == 1 && progress.last_step == 1 && progress.last_total == 1);
  /* The seed decides: the same seed gives the same bytes, another seed others. */
  CHECK(cm_generate(pipe, &g, &b) == CM_OK);
  CHECK(a.pixels && b.pixels && memcmp(a.pixels, b.pixels, 2 * 28 * 28) == 0);
  g.seed = 8;
  CHECK(cm_generate(pipe, &g, &c) == CM_OK);
  CHECK(c.pixels && memcmp(a.pixels, c.pixels, 2 * 28 * 28) != 0);
  cm_images_free(&b);
  cm_images_free(&c);
  CHECK(b.pixels == NULL && b.class_labels == NULL);

  /* A stop from the progress callback after the first of two steps. */
  g.num_inference_steps = 2;
  progress.calls = 0;
  progress.stop_at = 1;
  CHECK(cm_generate(pipe, &g, &b) == CM_ERROR_CANCELLED);
  CHECK(progress.calls == 1 && b.pixels == NULL);
  CHECK(strstr(cm_last_error(), "progress") != NULL);

  /* Out-of-range values are refused by name. */
  g.progress = NULL;
  g.num_inference_steps = 1;
  g.batch_size = 0;
  CHECK(cm_generate(pipe, &g, &b) == CM_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(cm_last_error(), "batch") != NULL);
  g.batch_size = 1;
  const int64_t bad_label = 10;
  g.class_labels = &bad_label;
  CHECK(cm_generate(pipe, &g, &b) == CM_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(cm_last_error(), "10") != NULL);

  /* Inpainting with nothing to regenerate keeps the image (to 8-bit rounding). */
  cm_edit_params e;
  cm_edit_params_init(&e);
  CHECK(strcmp(e.task, "inpaint") == 0 && e.batch_size == 1 && e.frames == 8);
  uint8_t* black = (uint8_t*)calloc(28 * 28, 1);
  e.image.pixels = a.pixels; /* the first generated image */
  e.image.height = e.image.width = 28;
  e.image.channels = 1;
  e.mask.pixels = black;
  e.mask.height = e.mask.width = 28;
  e.mask.channels = 1;
  e.class_labels = &label;
  e.num_class_labels = 1;
  CHECK(cm_edit(pipe, &e, &b) == CM_OK);
  CHECK(b.count == 1 && b.height == 28 && b.width == 28 && b.channels == 1);
  int worst = 0;
  for (int i = 0; b.pixels && i < 28 * 28; ++i) {
    const int d = abs((int)b.pixels[i] - (int)a.pixels[i]);
    if (d > worst) worst = d;
  }
  CHECK(b.pixels && worst <= 1);
  cm_images_free(&b);
  e.task = "sharpen";
  CHECK(cm_edit(pipe, &e, &b) == CM_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(cm_last_error(), "sharpen") != NULL);
  e.task = "inpaint";
  e.image.channels = 2;
  CHECK(cm_edit(pipe, &e, &b) == CM_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(cm_last_error(), "image") != NULL);

  free(black);
  cm_images_free(&a);
  cm_images_free(NULL);
  cm_pipeline_free(pipe);
  if (failures == 0) printf("test_capi: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
