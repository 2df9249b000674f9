#pragma once
// Line plots as standalone SVG files (no plotting library): `attnlab report` draws a sweep's
// declared plots with it. Axes with ticks, optional log x and y, a legend.
#include <string>
#include <vector>

namespace attnlab {

struct PlotSeries {
  std::string label;
  std::vector<double> x, y;  // non-finite points are skipped
  bool markers = false;
};

struct Plot {
  std::string title, x_label, y_label;
  bool log_x = false, log_y = false;
  std::vector<PlotSeries> series;
};

// The plot as SVG text; a plot without finite points draws empty axes.
std::string plot_svg(const Plot& p);
// Writes it atomically to path (NOTE [atomic replace]).
void write_plot_svg(const std::string& path, const Plot& p);

}  // namespace attnlab
