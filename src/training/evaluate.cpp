// cm train-classifier and cm eval.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/optim/adam.h>
#include <chrono>
#include <cstdio>

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

EvalResult evaluate(const EvalOptions& o) {
  if (o.samples_per_class < 1)
    throw Error("--per-class: must be at least 1, got " + std::to_string(o.samples_per_class));
  if (o.real_limit < 0)
    throw Error("--real-limit: must be 0 (all) or more, got " + std::to_string(o.real_limit));
  Classifier classifier = load_classifier(o.classifier);
  const Dataset test = load_fashion_mnist(kFashionMnistDir, "test", o.real_limit);
  const Dataset train =
      load_fashion_mnist(kFashionMnistDir, "train", o.real_limit > 0 ? o.real_limit : 10000);
  const auto test_features = classify_all(classifier, test.images, true);
  EvalResult result;
  result.classifier_test_accuracy = accuracy(classifier, test.images, test.labels);

  if (o.model.empty()) {
    result.rows.push_back({"test vs test", frechet_distance(test_features, test_features),
                           result.classifier_test_accuracy, static_cast<int64_t>(test.size())});
  } else {
    auto pipe = ConsistencyModelPipeline::from_pretrained(o.model);
    const auto& cfg = pipe.unet()->config();
    if (cfg.in_channels != 1 || cfg.sample_size != 28)
      throw Error(o.model + ": cm eval needs a 1×28×28 model (Fashion-MNIST), this one is " +
                  std::to_string(cfg.in_channels) + "×" + std::to_string(cfg.sample_size) + "²");
    const int classes = cfg.num_class_embeds ? 10 : 0;
    for (int steps : o.steps) {
      std::vector<at::Tensor> images;
      std::vector<int64_t> wanted;
      const int64_t total = o.samples_per_class * std::max(classes, 1);
      for (int64_t done = 0; done < total; done += 100) {
        GenerateOptions g;
        g.batch_size = static_cast<int>(std::min<int64_t>(100, total - done));
        g.num_inference_steps = steps;
        g.seed = o.seed + static_cast<uint64_t>(done);
        for (int64_t i = 0; i < g.batch_size && classes > 0; ++i)
          g.class_labels.push_back((done + i) / o.samples_per_class);
        const auto r = pipe(g);
        images.push_back(r.images.permute({0, 3, 1, 2}) * 2 - 1);
        wanted.insert(wanted.end(), g.class_labels.begin(), g.class_labels.end());
      }
      const auto all = at::cat(images).contiguous();
      EvalRow row;
      row.what = std::to_string(steps) + (steps == 1 ? " step" : " steps");
      row.frechet = frechet_distance(classify_all(classifier, all, true), test_features);
      if (classes > 0) row.accuracy = accuracy(classifier, all, at::tensor(wanted));
      row.images = all.size(0);
      result.rows.push_back(row);
      if (o.log) {
        char line[160];
        std::snprintf(line, sizeof line, "%s: Fréchet %.3f  accuracy %.4f", row.what.c_str(),
                      row.frechet, row.accuracy);
        o.log(line);
      }
    }
  }
  const auto train_features = classify_all(classifier, train.images, true);
  result.rows.push_back(
      {"train vs test (real-data floor)", frechet_distance(train_features, test_features),
       accuracy(classifier, train.images, train.labels), static_cast<int64_t>(train.size())});
  return result;
}

}  // namespace cm
