// Measuring generated images: a small Fashion-MNIST classifier (trained once, shipped), the
// Fréchet distance between its features of generated and real images, and the classifier's
// accuracy on class-conditional samples.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cm/log.h"

namespace cm {

struct ClassifierTrainOptions {
  std::string data = "fashion-mnist";
  std::string output = "runs/fmnist-classifier";  // folder: model.safetensors
  bool overwrite = false;  // replace a model.safetensors already in `output` (else refused)
  int64_t epochs = 3;
  int64_t batch_size = 128;
  double lr = 2e-3;
  uint64_t seed = 0;
  LogCallback log;  // a line per epoch
};

struct ClassifierTrainResult {
  double test_accuracy = 0;  // on the 10,000 test images
  double seconds = 0;
};

ClassifierTrainResult train_classifier(const ClassifierTrainOptions& options);

struct EvalOptions {
  std::string model;       // pipeline folder; empty: evaluate real test images against themselves
  std::string classifier = "models/fmnist-classifier";
  int64_t samples_per_class = 100;
  std::vector<int> steps = {1, 2};  // sampling step counts to evaluate
  // Explicit schedules to evaluate as well, a row each: descending timestep indices, as
  // GenerateOptions::timesteps (say {100, 0} to try another intermediate time for two steps).
  std::vector<std::vector<int64_t>> timesteps;
  uint64_t seed = 0;
  int64_t real_limit = 0;  // > 0: use only this many real images per split (tests)
  LogCallback log;         // a line per evaluated step count
};

struct EvalRow {
  std::string what;        // "1 step", "2 steps", "test vs test", "train vs test"
  double frechet = 0;      // Fréchet distance to the real test images' features
  double accuracy = -1;    // classifier accuracy on the requested classes (-1: not applicable)
  int64_t images = 0;
};

struct EvalResult {
  double classifier_test_accuracy = 0;
  std::vector<EvalRow> rows;
};

EvalResult evaluate(const EvalOptions& options);

class ConsistencyModelPipeline;

// The classifier and the real test images' features, loaded once to evaluate many models (or one
// model many times: cm train --eval-every). Samples are drawn in batches of 100, batch k with
// seed `seed + 100 k` and classes in order (samples_per_class of each), so two calls with the
// same arguments see the same noise.
class Evaluator {
 public:
  explicit Evaluator(const std::string& classifier, int64_t real_limit = 0);
  ~Evaluator();
  double classifier_test_accuracy() const;
  // One row per step count, then one per explicit schedule (`timesteps`); the pipeline must be a
  // 1×28×28 model (Fashion-MNIST).
  std::vector<EvalRow> evaluate(ConsistencyModelPipeline& pipeline, int64_t samples_per_class,
                                const std::vector<int>& steps, uint64_t seed,
                                const LogCallback& log = nullptr,
                                const std::vector<std::vector<int64_t>>& timesteps = {});
  // The real test images against themselves (distance ~0, the classifier's test accuracy).
  EvalRow test_against_itself() const;
  // The first `train_images` training images against the test images: the best a model can do.
  EvalRow real_data_floor(int64_t train_images);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cm
