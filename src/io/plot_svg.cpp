#include "io/plot_svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "io/atomic_file.h"

namespace attnlab {
namespace {

constexpr double kW = 760, kH = 460, kLeft = 70, kRight = 210, kTop = 40, kBottom = 55;
const char* const kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                               "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

std::string esc(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (c == '<') r += "&lt;";
    else if (c == '>') r += "&gt;";
    else if (c == '&') r += "&amp;";
    else if (c == '"') r += "&quot;";
    else r += c;
  }
  return r;
}

std::string num(double v) {
  if (v == 0) v = 0;  // no "-0" tick label
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

struct Axis {
  double lo, hi;
  bool log;
  double map(double v, double a, double b) const {  // value -> pixel in [a, b]
    const double t = log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) : (v - lo) / (hi - lo);
    return a + t * (b - a);
  }
  std::vector<double> ticks() const {
    std::vector<double> t;
    if (log) {
      for (double e = std::floor(std::log10(lo)); e <= std::ceil(std::log10(hi)); ++e) {
        const double v = std::pow(10.0, e);
        if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) t.push_back(v);
      }
      if (t.size() < 2) t = {lo, hi};
      return t;
    }
    const double span = hi - lo, raw = span / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
    const double step = raw / mag < 1.5 ? mag : raw / mag < 3.5 ? 2 * mag : raw / mag < 7.5 ? 5 * mag : 10 * mag;
    for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step) t.push_back(v);
    return t;
  }
};

bool usable(double v, bool log) { return std::isfinite(v) && (!log || v > 0); }

Axis fit(const Plot& p, bool x) {
  const bool log = x ? p.log_x : p.log_y;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto& s : p.series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      const double v = x ? s.x[i] : s.y[i];
      if (usable(s.x[i], p.log_x) && usable(s.y[i], p.log_y)) lo = std::min(lo, v), hi = std::max(hi, v);
    }
  if (!std::isfinite(lo)) lo = log ? 1 : 0, hi = log ? 10 : 1;
  if (hi <= lo) {
    const double pad = log ? 2 : std::max(1e-9, std::abs(lo) * 0.05 + 1e-9);
    lo = log ? lo / pad : lo - pad, hi = log ? hi * pad : hi + pad;
  } else if (!log) {
    const double pad = (hi - lo) * 0.04;
    lo -= pad, hi += pad;
  }
  return {lo, hi, log};
}

}  // namespace

std::string plot_svg(const Plot& p) {
  const Axis ax = fit(p, true), ay = fit(p, false);
  const double x0 = kLeft, x1 = kW - kRight, y0 = kH - kBottom, y1 = kTop;
  std::string o = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(kW) + "\" height=\"" + num(kH) +
                  "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o += "<text x=\"" + num((x0 + x1) / 2) + "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" + esc(p.title) + "</text>\n";
  for (double t : ax.ticks()) {
    const double px = ax.map(t, x0, x1);
    o += "<line x1=\"" + num(px) + "\" y1=\"" + num(y0) + "\" x2=\"" + num(px) + "\" y2=\"" + num(y1) +
         "\" stroke=\"#e6e6e6\"/>\n<text x=\"" + num(px) + "\" y=\"" + num(y0 + 16) + "\" text-anchor=\"middle\">" +
         num(t) + "</text>\n";
  }
  for (double t : ay.ticks()) {
    const double py = ay.map(t, y0, y1);
    o += "<line x1=\"" + num(x0) + "\" y1=\"" + num(py) + "\" x2=\"" + num(x1) + "\" y2=\"" + num(py) +
         "\" stroke=\"#e6e6e6\"/>\n<text x=\"" + num(x0 - 6) + "\" y=\"" + num(py + 4) + "\" text-anchor=\"end\">" +
         num(t) + "</text>\n";
  }
  o += "<rect x=\"" + num(x0) + "\" y=\"" + num(y1) + "\" width=\"" + num(x1 - x0) + "\" height=\"" + num(y0 - y1) +
       "\" fill=\"none\" stroke=\"black\"/>\n";
  o += "<text x=\"" + num((x0 + x1) / 2) + "\" y=\"" + num(kH - 14) + "\" text-anchor=\"middle\">" + esc(p.x_label) +
       (p.log_x ? " (log)" : "") + "</text>\n";
  o += "<text transform=\"translate(18," + num((y0 + y1) / 2) + ") rotate(-90)\" text-anchor=\"middle\">" +
       esc(p.y_label) + (p.log_y ? " (log)" : "") + "</text>\n";
  for (size_t k = 0; k < p.series.size(); ++k) {
    const PlotSeries& s = p.series[k];
    const std::string color = kColors[k % (sizeof kColors / sizeof *kColors)];
    std::string pts;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!usable(s.x[i], p.log_x) || !usable(s.y[i], p.log_y)) continue;
      const double px = ax.map(s.x[i], x0, x1), py = ay.map(s.y[i], y0, y1);
      pts += num(px) + "," + num(py) + " ";
      if (s.markers) o += "<circle cx=\"" + num(px) + "\" cy=\"" + num(py) + "\" r=\"3\" fill=\"" + color + "\"/>\n";
    }
    if (!pts.empty())
      o += "<polyline fill=\"none\" stroke=\"" + color + "\" stroke-width=\"1.5\" points=\"" + pts + "\"/>\n";
    const double ly = y1 + 8 + 16 * double(k);
    o += "<line x1=\"" + num(x1 + 12) + "\" y1=\"" + num(ly) + "\" x2=\"" + num(x1 + 30) + "\" y2=\"" + num(ly) +
         "\" stroke=\"" + color + "\" stroke-width=\"2\"/>\n<text x=\"" + num(x1 + 34) + "\" y=\"" + num(ly + 4) +
         "\" font-size=\"10\">" + esc(s.label) + "</text>\n";
  }
  return o + "</svg>\n";
}

void write_plot_svg(const std::string& path, const Plot& p) { write_file_atomic(path, plot_svg(p)); }

}  // namespace attnlab
