// cm plot-log: the loss curve of a training log as a PNG, no plotting library needed. Light grid,
// the raw loss in grey and a moving average in blue; the axes' ranges are printed by the caller.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "cm/error.h"
#include "cm/image_io.h"
#include "cm/training.h"

namespace cm {

namespace {

struct Canvas {
  int w, h;
  std::vector<uint8_t> px;
  Canvas(int w_, int h_) : w(w_), h(h_), px(static_cast<size_t>(w_) * h_ * 3, 255) {}
  void set(int x, int y, const uint8_t c[3]) {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    std::copy(c, c + 3, &px[(static_cast<size_t>(y) * w + x) * 3]);
  }
  void line(double x0, double y0, double x1, double y1, const uint8_t c[3]) {
    const int n = static_cast<int>(std::max(std::abs(x1 - x0), std::abs(y1 - y0))) + 1;
    for (int i = 0; i <= n; ++i) {
      const double t = static_cast<double>(i) / n;
      set(static_cast<int>(std::lround(x0 + t * (x1 - x0))),
          static_cast<int>(std::lround(y0 + t * (y1 - y0))), c);
    }
  }
};

}  // namespace

LossPlot plot_training_log(const std::string& csv_path, const std::string& png_path) {
  std::ifstream in(csv_path);
  if (!in) throw Error(csv_path + ": cannot open the training log");
  std::string line;
  std::getline(in, line);  // header
  std::vector<double> steps, losses;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::string step, loss;
    if (!std::getline(ss, step, ',') || !std::getline(ss, loss, ',')) continue;
    try {
      steps.push_back(std::stod(step));
      losses.push_back(std::stod(loss));
    } catch (const std::exception&) {
      throw Error(csv_path + ": malformed line '" + line + "'");
    }
  }
  if (steps.size() < 2) throw Error(csv_path + ": fewer than two logged steps to plot");
  LossPlot p;
  p.first_step = steps.front();
  p.last_step = steps.back();
  // A log scale: consistency losses fall by orders of magnitude and jump when N(k) doubles.
  p.min_loss = *std::min_element(losses.begin(), losses.end());
  p.max_loss = *std::max_element(losses.begin(), losses.end());
  const double lo = std::log10(std::max(p.min_loss, 1e-12));
  const double hi = std::log10(std::max(p.max_loss, 1e-12)) + 1e-9;
  const int W = 800, H = 400, M = 30;
  Canvas c(W, H);
  const uint8_t grid[3] = {225, 225, 225}, axis[3] = {0, 0, 0}, raw[3] = {170, 170, 170},
                avg[3] = {31, 94, 200};
  auto X = [&](double s) { return M + (s - p.first_step) / (p.last_step - p.first_step) * (W - 2 * M); };
  auto Y = [&](double l) {
    return H - M - (std::log10(std::max(l, 1e-12)) - lo) / (hi - lo) * (H - 2 * M);
  };
  for (int d = static_cast<int>(std::floor(lo)); d <= static_cast<int>(std::ceil(hi)); ++d) {
    if (d >= lo && d <= hi) c.line(M, Y(std::pow(10, d)), W - M, Y(std::pow(10, d)), grid);
  }
  c.line(M, H - M, W - M, H - M, axis);
  c.line(M, M, M, H - M, axis);
  for (size_t i = 1; i < steps.size(); ++i)
    c.line(X(steps[i - 1]), Y(losses[i - 1]), X(steps[i]), Y(losses[i]), raw);
  const size_t window = std::max<size_t>(1, steps.size() / 50);
  double prev_x = 0, prev_y = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    const size_t from = i >= window ? i - window + 1 : 0;
    double sum = 0;
    for (size_t j = from; j <= i; ++j) sum += losses[j];
    const double x = X(steps[i]), y = Y(sum / (i - from + 1));
    if (i > 0) {
      c.line(prev_x, prev_y, x, y, avg);
      c.line(prev_x, prev_y + 1, x, y + 1, avg);
    }
    prev_x = x;
    prev_y = y;
  }
  ImageU8 img;
  img.width = W;
  img.height = H;
  img.channels = 3;
  img.pixels = std::move(c.px);
  std::ostringstream text;
  text << "loss (log scale, " << p.min_loss << " to " << p.max_loss << ") against step ("
       << p.first_step << " to " << p.last_step << ") of " << csv_path;
  write_png(png_path, img, {{"Description", text.str()}});
  return p;
}

}  // namespace cm
