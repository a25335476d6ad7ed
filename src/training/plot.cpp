// cm plot-log: a training log drawn as a PNG or JPEG, no plotting library needed. The loss
// against step (log scale: light grid, the raw loss in grey, a moving average in blue) and, where
// the run evaluated itself (cm train --eval-every), the one- and two-step Fréchet distance and
// class accuracy against step in panels below, on the same step axis. With several logs: their
// evaluations against the images seen, one colour per run (the cost-to-quality chart).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "cm/error.h"
#include "cm/image_io.h"
#include "cm/training.h"
#include "training/bitmap_font.h"

namespace cm {

using training::Canvas;

namespace {

constexpr uint8_t kGrid[3] = {225, 225, 225}, kAxis[3] = {0, 0, 0}, kRaw[3] = {170, 170, 170},
                  kBlue[3] = {31, 94, 200}, kOrange[3] = {220, 110, 20};
constexpr int kWidth = 800, kLeft = 80, kRight = 20;
const double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Series {
  std::vector<double> steps, values;
  std::vector<double> images;  // the log's `images` cell on each row (NaN where it has none)
};

struct Log {
  Series loss;
  std::map<std::string, Series> eval;  // column name -> its non-empty cells
};

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::string cell;
  std::istringstream ss(line);
  while (std::getline(ss, cell, ',')) out.push_back(cell);
  if (!line.empty() && line.back() == ',') out.emplace_back();
  return out;
}

Log read_log(const std::string& csv_path) {
  std::ifstream in(csv_path);
  if (!in) throw Error(csv_path + ": cannot open the training log");
  std::string line;
  std::getline(in, line);
  const auto header = split_csv(line);
  auto column = [&](const std::string& name) {
    const auto it = std::find(header.begin(), header.end(), name);
    return it == header.end() ? -1 : static_cast<int>(it - header.begin());
  };
  const int step_col = column("step"), loss_col = column("loss"), images_col = column("images");
  if (step_col < 0 || loss_col < 0)
    throw Error(csv_path + ": no step and loss columns in the header '" + line +
                "' (a train_log.csv of cm train?)");
  const char* eval_names[] = {"frechet_1step", "accuracy_1step", "frechet_2steps",
                              "accuracy_2steps"};
  Log log;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto cells = split_csv(line);
    auto number = [&](int col) {
      if (col < 0 || col >= static_cast<int>(cells.size()) || cells[col].empty()) return kNaN;
      size_t used = 0;
      double v = kNaN;
      try {
        v = std::stod(cells[col], &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != cells[col].size()) throw Error(csv_path + ": malformed line '" + line + "'");
      return v;
    };
    const double step = number(step_col), loss = number(loss_col);
    if (std::isnan(step) || std::isnan(loss))
      throw Error(csv_path + ": malformed line '" + line + "'");
    const double images = number(images_col);
    log.loss.steps.push_back(step);
    log.loss.values.push_back(loss);
    log.loss.images.push_back(images);
    for (const char* name : eval_names) {
      const double v = number(column(name));
      if (std::isfinite(v)) {
        log.eval[name].steps.push_back(step);
        log.eval[name].values.push_back(v);
        log.eval[name].images.push_back(images);
      }
    }
  }
  if (log.loss.steps.size() < 2) throw Error(csv_path + ": fewer than two logged steps to plot");
  return log;
}

// Round tick positions: steps of 1, 2 or 5 times a power of ten, about `want` of them.
std::vector<double> nice_ticks(double lo, double hi, int want) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / want;
  const double mag = std::pow(10, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  std::vector<double> out;
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step)
    out.push_back(std::abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

// Tick text: 1.2M and 400k for large values (image counts), 1e-05 for small ones.
std::string label(double v) {
  char buf[32];
  if (std::abs(v) >= 1e6)
    std::snprintf(buf, sizeof buf, "%gM", v / 1e6);
  else if (std::abs(v) >= 1e4)
    std::snprintf(buf, sizeof buf, "%gk", v / 1e3);
  else if (v != 0 && std::abs(v) < 1e-3)
    std::snprintf(buf, sizeof buf, "%.0e", v);
  else
    std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// One panel: a frame, horizontal grid lines with their labels, the step axis's ticks, a title.
class Panel {
 public:
  Panel(Canvas& c, int top, int height, double x0, double x1, double y0, double y1, bool log_y)
      : c_(c), top_(top), height_(height), x0_(x0), x1_(x1), log_y_(log_y) {
    y0_ = log_y ? std::log10(std::max(y0, 1e-12)) : y0;
    y1_ = log_y ? std::log10(std::max(y1, 1e-12)) : y1;
    if (!(y1_ > y0_)) {  // a flat series: give it some room
      const double pad = std::max(std::abs(y0_) * 0.1, 1e-6);
      y0_ -= pad;
      y1_ += pad;
    }
  }
  double x(double step) const {
    return kLeft + (step - x0_) / (x1_ - x0_) * (kWidth - kLeft - kRight);
  }
  double y(double v) const {
    const double t = log_y_ ? std::log10(std::max(v, 1e-12)) : v;
    return top_ + height_ - (t - y0_) / (y1_ - y0_) * height_;
  }
  void frame(const std::string& title) {
    if (log_y_) {
      // Powers of ten; within less than a decade or two, their 2× and 5× (or every digit) too.
      for (const auto& mantissas : std::vector<std::vector<int>>{{1}, {1, 2, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9}}) {
        std::vector<double> ticks;
        for (int d = static_cast<int>(std::floor(y0_)); d <= static_cast<int>(std::ceil(y1_)); ++d)
          for (int m : mantissas) {
            const double v = m * std::pow(10, d), t = std::log10(v);
            if (t >= y0_ - 1e-9 && t <= y1_ + 1e-9) ticks.push_back(v);
          }
        if (ticks.size() >= 3 || mantissas.size() == 9) {
          for (double v : ticks) y_tick(v, label(v));
          break;
        }
      }
    } else {
      for (double v : nice_ticks(y0_, y1_, 5)) y_tick(v, label(v));
    }
    for (double s : nice_ticks(x0_, x1_, 8)) {
      c_.line(x(s), top_ + height_, x(s), top_ + height_ + 4, kAxis);
      const std::string text = label(s);
      c_.text(static_cast<int>(x(s)) - Canvas::text_width(text) / 2, top_ + height_ + 7, text,
              kAxis);
    }
    c_.line(kLeft, top_ + height_, kWidth - kRight, top_ + height_, kAxis);
    c_.line(kLeft, top_, kLeft, top_ + height_, kAxis);
    c_.text(kLeft, top_ - 2 * Canvas::kGlyphHeight - 6, title, kAxis, 2);
  }
  void polyline(const Series& s, const uint8_t color[3], bool markers) {
    for (size_t i = 0; i < s.steps.size(); ++i) {
      const double px = x(s.steps[i]), py = y(s.values[i]);
      if (i > 0) {
        c_.line(x(s.steps[i - 1]), y(s.values[i - 1]), px, py, color);
        c_.line(x(s.steps[i - 1]), y(s.values[i - 1]) + 1, px, py + 1, color);
      }
      if (markers)
        for (int d = -2; d <= 2; ++d) c_.line(px - 2, py + d, px + 2, py + d, color);
    }
  }
  void legend(int slot, const std::string& text, const uint8_t color[3]) {
    legend_at(kWidth - kRight - 180 + slot * 90, text, color);
  }
  // A dashed vertical line at x = v.
  void dashed_vertical(double v, const uint8_t color[3]) {
    for (int y = top_; y < top_ + height_; y += 8) c_.line(x(v), y, x(v), y + 4, color);
  }
  // A legend entry whose left edge is at x; returns where the next one may start.
  int legend_at(int lx, const std::string& text, const uint8_t color[3]) {
    const int ly = top_ - Canvas::kGlyphHeight - 6;
    for (int d = 0; d < 3; ++d) c_.line(lx, ly + 2 + d, lx + 14, ly + 2 + d, color);
    return lx + 18 + c_.text(lx + 18, ly, text, kAxis) + 14;
  }

 private:
  void y_tick(double v, const std::string& text) {
    if (y(v) < top_ - 1 || y(v) > top_ + height_ + 1) return;
    c_.line(kLeft, y(v), kWidth - kRight, y(v), kGrid);
    c_.line(kLeft - 4, y(v), kLeft, y(v), kAxis);
    c_.text(kLeft - 7 - Canvas::text_width(text), static_cast<int>(y(v)) - 3, text, kAxis);
  }

  Canvas& c_;
  int top_, height_;
  double x0_, x1_, y0_, y1_;
  bool log_y_;
};

std::pair<double, double> range_of(std::initializer_list<const Series*> series) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto* s : series) {
    if (!s) continue;
    for (double v : s->values) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  return {lo, hi};
}

// ".png" or ".jpg"/".jpeg" (any case): true for JPEG; anything else is refused by name.
bool is_jpeg_name(const std::string& path) {
  const auto dot = path.rfind('.');
  std::string ext = dot == std::string::npos ? "" : path.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  if (ext != ".png" && ext != ".jpg" && ext != ".jpeg")
    throw Error("-o " + path + ": plot-log writes .png or .jpg (.jpeg) images");
  return ext != ".png";
}

void write_plot(Canvas& c, const std::string& image_path, bool jpeg, const std::string& text) {
  ImageU8 img;
  img.width = c.width;
  img.height = c.height;
  img.channels = 3;
  img.pixels = std::move(c.pixels);
  if (jpeg)
    write_jpeg(image_path, img);
  else
    write_png(image_path, img, {{"Description", text}});
}

}  // namespace

QualityPlot plot_quality_against_images(const std::vector<QualityRun>& runs,
                                        const std::string& image_path) {
  static constexpr uint8_t kPalette[][3] = {{31, 94, 200},  {220, 110, 20}, {40, 150, 60},
                                            {200, 40, 40},  {140, 70, 180}, {90, 90, 90}};
  constexpr size_t kColors = sizeof kPalette / sizeof kPalette[0];
  const bool jpeg = is_jpeg_name(image_path);
  if (runs.empty()) throw Error("plot-log: no training log to draw");
  if (runs.size() > kColors)
    throw Error("plot-log: at most " + std::to_string(kColors) + " logs in one chart");
  const char* names[] = {"frechet_1step", "frechet_2steps", "accuracy_1step", "accuracy_2steps"};
  const char* titles[] = {"Frechet distance, 1 step (log scale)",
                          "Frechet distance, 2 steps (log scale)", "class accuracy, 1 step",
                          "class accuracy, 2 steps"};
  // Each run's series with the images seen as x.
  std::vector<std::map<std::string, Series>> drawn(runs.size());
  QualityPlot p;
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = 0;
  for (size_t r = 0; r < runs.size(); ++r) {
    const auto& run = runs[r];
    if (!(run.images_before >= 0) || !(run.images_per_step >= 0))
      throw Error(run.csv_path + ": images before and per step must be 0 or more");
    const Log log = read_log(run.csv_path);
    for (const char* name : names) {
      const auto it = log.eval.find(name);
      if (it == log.eval.end()) continue;
      Series& out = drawn[r][name];
      for (size_t i = 0; i < it->second.steps.size(); ++i) {
        const double own = run.images_per_step > 0 ? it->second.steps[i] * run.images_per_step
                                                   : it->second.images[i];
        if (std::isnan(own))
          throw Error(run.csv_path + ": no images column (a log from before 2026-12-08): give "
                      "its images per step (--batch)");
        out.steps.push_back(run.images_before + own);
        out.values.push_back(it->second.values[i]);
        x_lo = std::min(x_lo, out.steps.back());
        x_hi = std::max(x_hi, out.steps.back());
        ++p.evaluations;
      }
    }
  }
  if (p.evaluations == 0)
    throw Error("plot-log: none of the logs has evaluations (cm train --eval-every)");
  p.max_images = x_hi;
  x_lo = std::min(x_lo, 0.0);
  if (!(x_hi > x_lo)) x_hi = x_lo + 1;

  const int eval_h = 200, gap = 70, top = 40;
  Canvas c(kWidth, top + 4 * (eval_h + gap) - gap + 50);
  int next = top;
  for (int k = 0; k < 4; ++k) {
    std::vector<const Series*> all;
    for (const auto& run : drawn)
      if (const auto it = run.find(names[k]); it != run.end()) all.push_back(&it->second);
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (const auto* series : all)
      for (double v : series->values) lo = std::min(lo, v), hi = std::max(hi, v);
    if (all.empty()) lo = 0, hi = 1;
    const bool log_y = k < 2 && lo > 0;
    Panel panel(c, next, eval_h, x_lo, x_hi, lo, hi, log_y);
    panel.frame(titles[k]);
    int lx = kLeft + Canvas::text_width(titles[k], 2) + 30;
    for (size_t r = 0; r < runs.size(); ++r) {
      // Where the run's own training began: the images before it are the pretraining's.
      if (runs[r].images_before > 0) panel.dashed_vertical(runs[r].images_before, kPalette[r]);
      if (const auto it = drawn[r].find(names[k]); it != drawn[r].end())
        panel.polyline(it->second, kPalette[r], true);
      lx = panel.legend_at(lx, runs[r].label.empty() ? runs[r].csv_path : runs[r].label,
                           kPalette[r]);
    }
    next += eval_h + gap;
  }
  const std::string axis = "images seen, pretraining included (dashed: end of pretraining)";
  c.text((kWidth - Canvas::text_width(axis)) / 2, next - gap + 24, axis, kAxis);

  std::ostringstream text;
  text << "Frechet distance and class accuracy against images seen of";
  for (const auto& run : runs) text << " " << (run.label.empty() ? run.csv_path : run.label);
  write_plot(c, image_path, jpeg, text.str());
  return p;
}

LossPlot plot_training_log(const std::string& csv_path, const std::string& image_path) {
  const bool jpeg = is_jpeg_name(image_path);  // before reading anything
  const Log log = read_log(csv_path);
  LossPlot p;
  p.first_step = log.loss.steps.front();
  p.last_step = log.loss.steps.back();
  p.min_loss = *std::min_element(log.loss.values.begin(), log.loss.values.end());
  p.max_loss = *std::max_element(log.loss.values.begin(), log.loss.values.end());
  auto eval = [&](const char* name) -> const Series* {
    const auto it = log.eval.find(name);
    return it == log.eval.end() ? nullptr : &it->second;
  };
  const Series *f1 = eval("frechet_1step"), *f2 = eval("frechet_2steps");
  const Series *a1 = eval("accuracy_1step"), *a2 = eval("accuracy_2steps");
  p.evaluations = static_cast<int64_t>(std::max(f1 ? f1->steps.size() : 0, f2 ? f2->steps.size() : 0));

  const int loss_h = 300, eval_h = 200, gap = 70, top = 40;
  const bool frechet = f1 || f2, accuracy = a1 || a2;
  const int height = top + loss_h + (frechet ? gap + eval_h : 0) + (accuracy ? gap + eval_h : 0) + 30;
  Canvas c(kWidth, height);
  const double x0 = p.first_step, x1 = p.last_step > p.first_step ? p.last_step : p.first_step + 1;

  // A log scale: consistency losses fall by orders of magnitude and jump when N(k) doubles.
  Panel loss(c, top, loss_h, x0, x1, p.min_loss, p.max_loss, /*log_y=*/true);
  loss.frame("loss (log scale) against step");
  loss.polyline(log.loss, kRaw, false);
  Series average;
  const size_t window = std::max<size_t>(1, log.loss.steps.size() / 50);
  for (size_t i = 0; i < log.loss.steps.size(); ++i) {
    const size_t from = i >= window ? i - window + 1 : 0;
    double sum = 0;
    for (size_t j = from; j <= i; ++j) sum += log.loss.values[j];
    average.steps.push_back(log.loss.steps[i]);
    average.values.push_back(sum / static_cast<double>(i - from + 1));
  }
  loss.polyline(average, kBlue, false);
  loss.legend(0, "raw", kRaw);
  loss.legend(1, "average", kBlue);

  int next = top + loss_h + gap;
  auto eval_panel = [&](const Series* one, const Series* two, const std::string& title) {
    const auto [lo, hi] = range_of({one, two});
    Panel panel(c, next, eval_h, x0, x1, lo, hi, false);
    panel.frame(title);
    if (one) panel.polyline(*one, kBlue, true);
    if (two) panel.polyline(*two, kOrange, true);
    panel.legend(0, "1 step", kBlue);
    panel.legend(1, "2 steps", kOrange);
    next += eval_h + gap;
  };
  if (frechet) eval_panel(f1, f2, "Frechet distance (lower is better)");
  if (accuracy) eval_panel(a1, a2, "class accuracy");

  std::ostringstream text;
  text << "loss (log scale, " << p.min_loss << " to " << p.max_loss << ") against step ("
       << p.first_step << " to " << p.last_step << ") of " << csv_path;
  if (p.evaluations > 0) text << "; " << p.evaluations << " evaluations";
  write_plot(c, image_path, jpeg, text.str());
  return p;
}

}  // namespace cm
