// cm train-classifier and cm eval.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/optim/adam.h>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "cm/error.h"
#include "cm/eval.h"
#include "cm/pipeline.h"
#include "training/classifier.h"
#include "training/data.h"

namespace cm {

using namespace training;

namespace {

double accuracy(Classifier& model, const at::Tensor& images, const at::Tensor& labels) {
  const auto predicted = classify_all(model, images, /*features=*/false).argmax(1);
  return predicted.eq(labels).to(at::kDouble).mean().item<double>();
}

}  // namespace

ClassifierTrainResult train_classifier(const ClassifierTrainOptions& o) {
  if (o.batch_size < 1)
    throw Error("--batch-size: must be at least 1, got " + std::to_string(o.batch_size));
  if (o.epochs < 1) throw Error("--epochs: must be at least 1, got " + std::to_string(o.epochs));
  // Checked before minutes of training, not after: the default once was the shipped classifier.
  if (!o.overwrite && std::filesystem::exists(std::filesystem::path(o.output) / "model.safetensors"))
    throw Error("-o " + o.output +
                ": holds a classifier (model.safetensors); --overwrite replaces it, or choose "
                "another folder");
  const auto start = std::chrono::steady_clock::now();
  const Dataset train = load_dataset(o.data);
  const Dataset test = load_fashion_mnist(kFashionMnistDir, "test");
  torch::manual_seed(o.seed);
  Classifier model;
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(o.lr));
  auto gen = at::detail::createCPUGenerator(o.seed);
  const int64_t n = static_cast<int64_t>(train.size());
  if (o.batch_size > n)
    throw Error("--batch-size: " + std::to_string(o.batch_size) + " is more than the " +
                std::to_string(n) + " training images");
  const int64_t steps_per_epoch = n / o.batch_size;
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    model->train();
    const auto order = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));
    double loss_sum = 0;
    for (int64_t s = 0; s < steps_per_epoch; ++s) {
      // Cosine decay over the whole run keeps the last epoch from bouncing around.
      const double progress = static_cast<double>(epoch * steps_per_epoch + s) /
                              static_cast<double>(o.epochs * steps_per_epoch);
      for (auto& g : optimizer.param_groups())
        static_cast<torch::optim::AdamOptions&>(g.options())
            .lr(o.lr * 0.5 * (1 + std::cos(M_PI * progress)));
      const auto idx = order.slice(0, s * o.batch_size, (s + 1) * o.batch_size);
      auto x = train.images.index_select(0, idx);
      // Random horizontal flips: Fashion-MNIST items are roughly mirror-symmetric.
      const auto flip = at::rand({o.batch_size, 1, 1, 1}, gen) < 0.5;
      x = at::where(flip, x.flip({3}), x);
      const auto loss =
          at::cross_entropy_loss(model->forward(x), train.labels.index_select(0, idx));
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      loss_sum += loss.item<double>();
    }
    model->eval();
    if (o.log) {
      char line[160];
      std::snprintf(line, sizeof line, "epoch %lld/%lld  loss %.4f  test accuracy %.4f",
                    static_cast<long long>(epoch + 1), static_cast<long long>(o.epochs),
                    loss_sum / steps_per_epoch, accuracy(model, test.images, test.labels));
      o.log(line);
    }
  }
  model->eval();
  ClassifierTrainResult r;
  r.test_accuracy = accuracy(model, test.images, test.labels);
  save_classifier(model, o.output, r.test_accuracy);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

struct Evaluator::Impl {
  Classifier classifier{nullptr};
  at::Tensor test_features;
  double test_accuracy = 0;
};

Evaluator::Evaluator(const std::string& classifier, int64_t real_limit)
    : impl_(std::make_unique<Impl>()) {
  if (real_limit < 0)
    throw Error("--real-limit: must be 0 (all) or more, got " + std::to_string(real_limit));
  impl_->classifier = load_classifier(classifier);
  const Dataset test = load_fashion_mnist(kFashionMnistDir, "test", real_limit);
  impl_->test_features = classify_all(impl_->classifier, test.images, true);
  impl_->test_accuracy = accuracy(impl_->classifier, test.images, test.labels);
}

Evaluator::~Evaluator() = default;

double Evaluator::classifier_test_accuracy() const { return impl_->test_accuracy; }

std::vector<EvalRow> Evaluator::evaluate(ConsistencyModelPipeline& pipe, int64_t samples_per_class,
                                         const std::vector<int>& steps, uint64_t seed,
                                         const LogCallback& log,
                                         const std::vector<std::vector<int64_t>>& timesteps) {
  if (samples_per_class < 1)
    throw Error("--per-class: must be at least 1, got " + std::to_string(samples_per_class));
  const auto& cfg = pipe.unet()->config();
  if (cfg.in_channels != 1 || cfg.sample_size != 28)
    throw Error("evaluation needs a 1×28×28 model (Fashion-MNIST), this one is " +
                std::to_string(cfg.in_channels) + "×" + std::to_string(cfg.sample_size) + "²");
  const int classes = cfg.num_class_embeds ? 10 : 0;
  // One schedule: a step count, or explicit timesteps when `explicit_timesteps` is not empty.
  auto evaluate_one = [&](int n_steps, const std::vector<int64_t>& explicit_timesteps,
                          const std::string& what) {
    std::vector<at::Tensor> images;
    std::vector<int64_t> wanted;
    const int64_t total = samples_per_class * std::max(classes, 1);
    for (int64_t done = 0; done < total; done += 100) {
      GenerateOptions g;
      g.batch_size = static_cast<int>(std::min<int64_t>(100, total - done));
      g.num_inference_steps = n_steps;
      g.timesteps = explicit_timesteps;
      g.seed = seed + static_cast<uint64_t>(done);
      for (int64_t i = 0; i < g.batch_size && classes > 0; ++i)
        g.class_labels.push_back((done + i) / samples_per_class);
      const auto r = pipe(g);
      images.push_back(r.images.permute({0, 3, 1, 2}) * 2 - 1);
      wanted.insert(wanted.end(), g.class_labels.begin(), g.class_labels.end());
    }
    const auto all = at::cat(images).contiguous();
    EvalRow row;
    row.what = what;
    row.frechet = frechet_distance(classify_all(impl_->classifier, all, true), impl_->test_features);
    if (classes > 0) row.accuracy = accuracy(impl_->classifier, all, at::tensor(wanted));
    row.images = all.size(0);
    if (log) {
      char line[200];
      std::snprintf(line, sizeof line, "%s: Fréchet %.3f  accuracy %.4f", row.what.c_str(),
                    row.frechet, row.accuracy);
      log(line);
    }
    return row;
  };
  std::vector<EvalRow> rows;
  for (int n_steps : steps)
    rows.push_back(
        evaluate_one(n_steps, {}, std::to_string(n_steps) + (n_steps == 1 ? " step" : " steps")));
  for (const auto& schedule : timesteps) {
    if (schedule.empty()) throw Error("--timesteps: an empty schedule");
    std::string what = "timesteps ";
    for (size_t i = 0; i < schedule.size(); ++i)
      what += (i ? "," : "") + std::to_string(schedule[i]);
    rows.push_back(evaluate_one(static_cast<int>(schedule.size()), schedule, what));
  }
  return rows;
}

EvalRow Evaluator::test_against_itself() const {
  return {"test vs test", frechet_distance(impl_->test_features, impl_->test_features),
          impl_->test_accuracy, impl_->test_features.size(0)};
}

EvalRow Evaluator::real_data_floor(int64_t train_images) {
  const Dataset train = load_fashion_mnist(kFashionMnistDir, "train", train_images);
  const auto features = classify_all(impl_->classifier, train.images, true);
  return {"train vs test (real-data floor)", frechet_distance(features, impl_->test_features),
          accuracy(impl_->classifier, train.images, train.labels),
          static_cast<int64_t>(train.size())};
}

EvalResult evaluate(const EvalOptions& o) {
  if (o.samples_per_class < 1)
    throw Error("--per-class: must be at least 1, got " + std::to_string(o.samples_per_class));
  Evaluator evaluator(o.classifier, o.real_limit);
  EvalResult result;
  result.classifier_test_accuracy = evaluator.classifier_test_accuracy();
  if (o.model.empty()) {
    result.rows.push_back(evaluator.test_against_itself());
  } else {
    auto pipe = ConsistencyModelPipeline::from_pretrained(o.model);
    try {
      result.rows =
          evaluator.evaluate(pipe, o.samples_per_class, o.steps, o.seed, o.log, o.timesteps);
    } catch (const Error& e) {
      throw Error(o.model + ": " + e.what());
    }
  }
  result.rows.push_back(evaluator.real_data_floor(o.real_limit > 0 ? o.real_limit : 10000));
  return result;
}
}  // namespace cm
