// The evaluation classifier: a small CNN on 28×28 gray images whose pooled features feed the
// Fréchet distance (the role Inception plays for FID on natural images).
#pragma once

#include <string>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

namespace cm::training {

class ClassifierImpl : public torch::nn::Module {
 public:
  ClassifierImpl();
  // images [B, 1, 28, 28] in [-1, 1] -> logits [B, 10]
  at::Tensor forward(const at::Tensor& images);
  // The 128-d hidden features before the last layer.
  at::Tensor features(const at::Tensor& images);

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Classifier);

Classifier load_classifier(const std::string& dir);
void save_classifier(Classifier& model, const std::string& dir, double test_accuracy);
double classifier_saved_accuracy(const std::string& dir);

// Logits or features over a large set, in batches, without gradients.
at::Tensor classify_all(Classifier& model, const at::Tensor& images, bool features);

// Fréchet distance between Gaussians fitted to two feature sets [N, D] (float64 maths).
double frechet_distance(const at::Tensor& a, const at::Tensor& b);

}  // namespace cm::training
