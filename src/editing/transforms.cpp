// The linear transforms A of zero-shot editing and the masks Ω of its tasks.
#include <cmath>
#include <string>

#include "cm/editing.h"
#include "cm/error.h"

namespace cm {

at::Tensor orthogonal_completion(const std::vector<double>& first_axis) {
  const size_t n = first_axis.size();
  if (n == 0) throw Error("orthogonal_completion: empty axis");
  std::vector<std::vector<double>> basis;
  const auto add_orthogonalised = [&](std::vector<double> v) {
    // Classical Gram-Schmidt done twice is as accurate as the modified one and simpler.
    for (int pass = 0; pass < 2; ++pass) {
      for (const auto& b : basis) {
        double dot = 0;
        for (size_t i = 0; i < n; ++i) dot += v[i] * b[i];
        for (size_t i = 0; i < n; ++i) v[i] -= dot * b[i];
      }
    }
    double norm = 0;
    for (double x : v) norm += x * x;
    norm = std::sqrt(norm);
    if (norm < 1e-6) return;  // (nearly) in the span already
    for (double& x : v) x /= norm;
    basis.push_back(std::move(v));
  };
  add_orthogonalised(first_axis);
  if (basis.empty()) throw Error("orthogonal_completion: the first axis is zero");
  for (size_t k = 0; k < n && basis.size() < n; ++k) {
    std::vector<double> e(n, 0.0);
    e[k] = 1;
    add_orthogonalised(e);
  }
  auto q = at::empty({static_cast<int64_t>(n), static_cast<int64_t>(n)}, at::kDouble);
  auto a = q.accessor<double, 2>();
  for (size_t j = 0; j < n; ++j)
    for (size_t i = 0; i < n; ++i) a[i][j] = basis[j][i];
  return q;
}

LinearTransform LinearTransform::identity() {
  return LinearTransform();
}

LinearTransform LinearTransform::colour() {
  LinearTransform t;
  t.kind_ = Kind::kColour;
  t.q_ = orthogonal_completion({0.2989, 0.5870, 0.1140});
  return t;
}

LinearTransform LinearTransform::patches(int p) {
  if (p < 1) throw Error("patch size must be at least 1, got " + std::to_string(p));
  LinearTransform t;
  t.kind_ = Kind::kPatches;
  t.patch_ = p;
  t.q_ = orthogonal_completion(std::vector<double>(static_cast<size_t>(p) * p, 1.0));
  return t;
}

namespace {

// x [B, C, H, W] -> [B, C, H/p, W/p, p*p]: one row per patch, pixels in reading order.
at::Tensor to_patches(const at::Tensor& x, int p) {
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  if (h % p != 0 || w % p != 0)
    throw Error("patch size " + std::to_string(p) + " does not divide the image size " +
                std::to_string(w) + "x" + std::to_string(h));
  return x.reshape({b, c, h / p, p, w / p, p})
      .permute({0, 1, 2, 4, 3, 5})
      .reshape({b, c, h / p, w / p, static_cast<int64_t>(p) * p});
}

at::Tensor from_patches(const at::Tensor& rows, int p, at::IntArrayRef shape) {
  const int64_t b = shape[0], c = shape[1], h = shape[2], w = shape[3];
  return rows.reshape({b, c, h / p, w / p, p, p}).permute({0, 1, 2, 4, 3, 5}).reshape(shape);
}

// Applies q (forward: coefficient e = Σ_d x_d·q[d][e]) or qᵀ (inverse) in float64, over the
// channels or over each patch's pixels.
at::Tensor apply(const at::Tensor& x, const at::Tensor& q, bool on_channels, int p, bool inverse) {
  if (x.dim() != 4) throw Error("editing transforms take [B, C, H, W] images");
  const auto m = (inverse ? q.t() : q).to(x.device());
  const auto xd = x.to(at::kDouble);
  at::Tensor y;
  if (on_channels) {
    if (x.size(1) != q.size(0))
      throw Error("the colour transform needs " + std::to_string(q.size(0)) + " channels, got " +
                  std::to_string(x.size(1)));
    y = at::einsum("bchw,cd->bdhw", {xd, m});
  } else {
    y = from_patches(at::matmul(to_patches(xd, p), m), p, x.sizes());
  }
  return y.to(x.scalar_type());
}

}  // namespace

at::Tensor LinearTransform::forward(const at::Tensor& images) const {
  if (kind_ == Kind::kIdentity) return images;
  return apply(images, q_, kind_ == Kind::kColour, patch_, false);
}

at::Tensor LinearTransform::inverse(const at::Tensor& coefficients) const {
  if (kind_ == Kind::kIdentity) return coefficients;
  return apply(coefficients, q_, kind_ == Kind::kColour, patch_, true);
}

at::Tensor Projection::operator()(const at::Tensor& keep, const at::Tensor& rest) const {
  if (!mask.defined()) return rest;
  const auto omega = mask.to(rest.device());
  if (transform.is_identity()) {
    // Exact where Ω is 0 or 1: the kept pixels come through bit for bit.
    const auto o = omega.to(rest.scalar_type());
    return keep.to(rest.scalar_type()) * o + rest * (1 - o);
  }
  // Mixed in float64 so that A⁻¹A adds no float32 rounding of its own.
  const auto o = omega.to(at::kDouble);
  const auto mixed = transform.forward(keep.to(at::kDouble)) * o +
                     transform.forward(rest.to(at::kDouble)) * (1 - o);
  return transform.inverse(mixed).to(rest.scalar_type());
}

Projection inpainting_projection(const at::Tensor& keep) {
  Projection p;
  p.mask = keep;
  return p;
}

Projection colorization_projection() {
  Projection p;
  p.transform = LinearTransform::colour();
  p.mask = at::zeros({1, 3, 1, 1}, at::kFloat);
  p.mask[0][0] = 1;
  return p;
}

Projection superres_projection(int factor, int height, int width) {
  Projection p;
  p.transform = LinearTransform::patches(factor);
  p.mask = at::zeros({1, 1, height, width}, at::kFloat);
  using at::indexing::None;
  using at::indexing::Slice;
  p.mask.index_put_({Slice(), Slice(), Slice(None, None, factor), Slice(None, None, factor)}, 1);
  return p;
}

}  // namespace cm
