// Text for plots drawn without a plotting library: a 5×7 pixel font (digits, capitals and the
// punctuation numbers and axis titles need; lower case is drawn as capitals).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cm::training {

// An RGB canvas, white to start, with what plots need: lines, text, clipping at the border.
struct Canvas {
  int width, height;
  std::vector<uint8_t> pixels;  // RGB, row-major
  Canvas(int w, int h);
  void set(int x, int y, const uint8_t color[3]);
  void line(double x0, double y0, double x1, double y1, const uint8_t color[3]);
  // `scale` pixels per font pixel; (x, y) the text's top-left corner. Returns the width drawn.
  int text(int x, int y, const std::string& s, const uint8_t color[3], int scale = 1);
  static int text_width(const std::string& s, int scale = 1);
  static constexpr int kGlyphHeight = 7;
};

}  // namespace cm::training
