#include "training/classifier.h"

#include <ATen/ATen.h>
#include <filesystem>

#include "cm/error.h"
#include "cm/safetensors.h"
#include "io/state_dict.h"

namespace cm::training {

namespace fs = std::filesystem;

ClassifierImpl::ClassifierImpl() {
  auto conv = [](int64_t in, int64_t out) {
    return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1));
  };
  conv1 = register_module("conv1", conv(1, 32));
  norm1 = register_module("norm1", torch::nn::GroupNorm(8, 32));
  conv2 = register_module("conv2", conv(32, 64));
  norm2 = register_module("norm2", torch::nn::GroupNorm(8, 64));
  conv3 = register_module("conv3", conv(64, 64));
  norm3 = register_module("norm3", torch::nn::GroupNorm(8, 64));
  fc1 = register_module("fc1", torch::nn::Linear(64 * 7 * 7, 128));
  fc2 = register_module("fc2", torch::nn::Linear(128, 10));
}

at::Tensor ClassifierImpl::features(const at::Tensor& x) {
  auto h = at::max_pool2d(at::relu(norm1(conv1(x))), {2, 2});  // 14×14
  h = at::max_pool2d(at::relu(norm2(conv2(h))), {2, 2});       // 7×7
  h = at::relu(norm3(conv3(h)));
  return at::relu(fc1(h.flatten(1)));
}

at::Tensor ClassifierImpl::forward(const at::Tensor& x) { return fc2(features(x)); }

Classifier load_classifier(const std::string& dir) {
  const std::string path = (fs::path(dir) / "model.safetensors").string();
  if (!fs::exists(path))
    throw Error(path + ": no classifier (train one with cm train-classifier)");
  Classifier model;
  const auto state = read_state_dict(path);
  torch::NoGradGuard no_grad;
  std::vector<std::string> missing;
  for (auto& p : model->named_parameters(true)) {
    auto it = state.find(p.key());
    if (it == state.end() || it->second.sizes() != p.value().sizes()) {
      missing.push_back(p.key());
      continue;
    }
    p.value().copy_(it->second);
  }
  if (!missing.empty() || state.size() != model->named_parameters(true).size())
    throw Error(path + ": not a classifier of this architecture (first bad tensor: " +
                (missing.empty() ? std::string("extra tensors") : missing.front()) + ")");
  model->eval();
  return model;
}

void save_classifier(Classifier& model, const std::string& dir, double test_accuracy) {
  fs::create_directories(dir);
  std::map<std::string, at::Tensor> state;
  for (const auto& p : model->named_parameters(true)) state.emplace(p.key(), p.value().detach());
  write_state_dict((fs::path(dir) / "model.safetensors").string(), state,
                   {{"format", "pt"},
                    {"architecture", "cm-fmnist-cnn-v2"},
                    {"test_accuracy", std::to_string(test_accuracy)}});
}

double classifier_saved_accuracy(const std::string& dir) {
  SafeTensorsFile f((fs::path(dir) / "model.safetensors").string());
  auto it = f.metadata().find("test_accuracy");
  return it == f.metadata().end() ? -1 : std::stod(it->second);
}

at::Tensor classify_all(Classifier& model, const at::Tensor& images, bool features) {
  torch::InferenceMode guard;
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < images.size(0); i += 500) {
    const auto batch = images.slice(0, i, std::min(images.size(0), i + 500));
    out.push_back(features ? model->features(batch) : model->forward(batch));
  }
  return at::cat(out);
}

double frechet_distance(const at::Tensor& a_in, const at::Tensor& b_in) {
  const auto a = a_in.to(at::kDouble), b = b_in.to(at::kDouble);
  const auto mu_a = a.mean(0), mu_b = b.mean(0);
  const auto ca = a - mu_a, cb = b - mu_b;
  const auto cov_a = ca.t().mm(ca) / (a.size(0) - 1);
  const auto cov_b = cb.t().mm(cb) / (b.size(0) - 1);
  // Tr(sqrt(Σa Σb)) = Σ sqrt(eig(sqrt(Σa) Σb sqrt(Σa))), a symmetric PSD product.
  auto [ea, va] = at::linalg_eigh(cov_a);
  const auto sqrt_a = va.mm(at::diag(ea.clamp_min(0).sqrt())).mm(va.t());
  const auto inner = sqrt_a.mm(cov_b).mm(sqrt_a);
  const auto ev = at::linalg_eigvalsh((inner + inner.t()) / 2);
  const double tr_sqrt = ev.clamp_min(0).sqrt().sum().item<double>();
  const double mean_term = (mu_a - mu_b).pow(2).sum().item<double>();
  return mean_term + cov_a.trace().item<double>() + cov_b.trace().item<double>() - 2 * tr_sqrt;
}

}  // namespace cm::training
