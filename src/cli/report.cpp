// `attnlab report RUNS_OR_SWEEP_DIR [--by AXIS] [--out DIR]`: every run under a directory (a sweep's
// <out_dir>/<name>, or any folder of runs) as one table, grouped over seeds, in Markdown and CSV,
// and the plots the sweep file declares, as SVG.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "cli/commands.h"
#include "config/sweep.h"
#include "io/atomic_file.h"
#include "io/plot_svg.h"
#include "io/run_lock.h"
#include "io/run_log.h"
#include "util/check.h"
#include "util/log.h"

namespace attnlab::cli {
namespace {

namespace fs = std::filesystem;

struct Run {
  std::string name, dir, status;
  RunSeries series;
  RunConfig cfg;
  std::map<std::string, std::string> axis;  // axis key -> value (config text)
};

struct Group {
  std::vector<std::string> key;  // the axis values, in axis order (seed excluded)
  std::vector<const Run*> runs;
};

double last_or_nan(const std::vector<double>& v) { return v.empty() ? NAN : v.back(); }

std::pair<double, double> mean_std(const std::vector<double>& v) {
  std::vector<double> f;
  for (double x : v)
    if (std::isfinite(x)) f.push_back(x);
  if (f.empty()) return {NAN, NAN};
  double m = 0;
  for (double x : f) m += x / double(f.size());
  double s = 0;
  for (double x : f) s += (x - m) * (x - m) / double(f.size());
  return {m, std::sqrt(s)};
}

std::string fmt(double v, const char* f = "%.4f") {
  if (!std::isfinite(v)) return "—";
  char buf[48];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string fmt_ms(const std::vector<double>& v) {
  const auto [m, s] = mean_std(v);
  if (v.size() < 2) return fmt(m);
  return fmt(m) + " ± " + fmt(s);
}

// A config value as the report shows it: the resolved YAML's text for the key.
std::string config_value(const std::string& resolved_yaml, const std::string& key) {
  // key a.b or a.b.c: find section a, then (group b), then the leaf.
  std::vector<std::string> parts;
  for (size_t i = 0, j; i <= key.size(); i = j + 1) {
    j = key.find('.', i);
    if (j == std::string::npos) j = key.size();
    parts.push_back(key.substr(i, j - i));
  }
  std::istringstream in(resolved_yaml);
  std::string line;
  size_t depth = 0;
  while (std::getline(in, line)) {
    const size_t indent = line.find_first_not_of(' ');
    if (indent == std::string::npos || line[indent] == '#') continue;
    if (indent / 2 != depth) continue;
    const std::string want = parts[depth] + ":";
    if (line.compare(indent, want.size(), want) != 0) continue;
    if (depth + 1 == parts.size()) {
      std::string v = line.substr(indent + want.size());
      v.erase(0, v.find_first_not_of(' '));
      return v;
    }
    ++depth;
  }
  return "?";
}

std::vector<Run> load_runs(const std::string& dir) {
  std::vector<Run> runs;
  std::vector<fs::path> dirs;
  int without_log = 0;  // sweep points not started yet (or whose log is gone)
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_directory()) continue;
    if (fs::exists(e.path() / "metrics.h5"))
      dirs.push_back(e.path());
    else if (fs::exists(e.path() / "point.yaml"))
      ++without_log;
  }
  if (without_log) log::warn("{}: {} point directories without metrics.h5 (not started yet?) left out", dir, without_log);
  std::sort(dirs.begin(), dirs.end());
  for (const fs::path& d : dirs) {
    Run r;
    r.name = d.filename().string();
    r.dir = d.string();
    try {
      r.series = read_run_series((d / "metrics.h5").string());
    } catch (const Error& e) {  // one unreadable run log: the others are still reported
      log::warn("{}: left out ({})", d.string(), e.what());
      continue;
    }
    r.status = effective_status(r.series.summary.status, r.dir);
    runs.push_back(std::move(r));
  }
  return runs;
}

}  // namespace

Command add_report(CLI::App& app, const Globals& g) {
  CLI::App* sub = app.add_subcommand("report", "one table and the declared plots over a sweep's (or a folder's) runs");
  auto dir = std::make_shared<std::string>();
  auto by = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  sub->add_option("DIR", *dir, "a sweep's directory (runs/<sweep>) or any directory of runs")->required();
  sub->add_option("--by", *by, "the axis the rows are sorted by (and the x of `final` plots without one)");
  sub->add_option("--out", *out, "where report.md, report.csv and the plots go (default: DIR)");
  sub->footer("Rows: one per point, seeds grouped as mean ± std. Columns: final train and val loss (the last\n"
              "evaluation), best val step, peak max attention logit, status, wall time.");
  return {sub, [=, &g] {
            const std::string out_dir = out->empty() ? *dir : *out;
            std::error_code ec;
            if (!fs::is_directory(*dir, ec)) throw ConfigError(*dir + ": not a directory of runs");
            // The axes: from the sweep file kept beside the points, else none (one row per run).
            std::vector<std::string> axes;
            std::vector<SweepPlot> plots;
            const std::string sweep_copy = *dir + "/sweep.yaml";
            if (fs::exists(sweep_copy, ec)) {
              const SweepFile s = load_sweep(sweep_copy);
              for (const auto& a : s.grid) axes.push_back(a.key);
              for (const auto& a : s.zip) axes.push_back(a.key);
              plots = s.plots;
            }
            std::vector<Run> runs = load_runs(*dir);
            if (fs::exists(sweep_copy, ec)) {
              // A sweep's folder: its points only (a run trained into it by hand is not one of them).
              std::set<std::string> points;
              for (const SweepPoint& p : sweep_points(load_sweep(sweep_copy))) points.insert(p.name);
              const size_t before = runs.size();
              std::erase_if(runs, [&](const Run& r) { return !points.count(r.name); });
              if (runs.size() < before)
                log::warn("{}: {} run directories that are not points of its sweep.yaml left out", *dir,
                          before - runs.size());
            }
            if (runs.empty()) throw ConfigError(*dir + ": no run directories (with metrics.h5) in it");
            if (!by->empty() && std::find(axes.begin(), axes.end(), *by) == axes.end() && *by != "seed")
              throw ConfigError("--by " + *by + ": not an axis of the sweep in " + *dir);
            for (Run& r : runs)
              for (const auto& a : axes) r.axis[a] = config_value(r.series.summary.config, a);
            // Groups: runs equal in every axis (all but the seed); without axes, each run alone.
            std::vector<Group> groups;
            for (const Run& r : runs) {
              std::vector<std::string> key;
              for (const auto& a : axes) key.push_back(r.axis.at(a));
              if (axes.empty()) key.push_back(r.name);
              auto it = std::find_if(groups.begin(), groups.end(), [&](const Group& gr) { return gr.key == key; });
              if (it == groups.end()) groups.push_back({key, {&r}});
              else it->runs.push_back(&r);
            }
            if (!by->empty() && *by != "seed") {
              const size_t k = size_t(std::find(axes.begin(), axes.end(), *by) - axes.begin());
              std::stable_sort(groups.begin(), groups.end(), [&](const Group& a, const Group& b) {
                char* ea = nullptr;
                char* eb = nullptr;
                const double va = std::strtod(a.key[k].c_str(), &ea), vb = std::strtod(b.key[k].c_str(), &eb);
                if (*ea == 0 && *eb == 0) return va < vb;
                return a.key[k] < b.key[k];
              });
            }
            // Markdown: one row per group.
            std::string md = "# Report: " + *dir + "\n\nFinal losses are the last evaluation's; mean ± std over "
                             "the seeds of a row. Max logit: the largest pre-cap attention logit any head reached.\n\n|";
            std::vector<std::string> head = axes.empty() ? std::vector<std::string>{"run"} : axes;
            for (const auto& h : head) md += " " + h + " |";
            md += " runs | final train loss | final val loss | best val step | peak max logit | status | wall s |\n|";
            for (size_t i = 0; i < head.size() + 7; ++i) md += "---|";
            md += "\n";
            for (const Group& gr : groups) {
              std::vector<double> tl, vl, best, peak, wall;
              std::map<std::string, int> statuses;
              for (const Run* r : gr.runs) {
                tl.push_back(last_or_nan(r->series.eval_train));
                vl.push_back(last_or_nan(r->series.eval_val));
                best.push_back(double(r->series.summary.best_val_step));
                peak.push_back(r->series.summary.max_logit_step >= 0 ? r->series.summary.peak_max_logit : NAN);
                wall.push_back(last_or_nan(r->series.wall_s));
                statuses[r->status]++;
              }
              std::string st;
              for (const auto& [k, n] : statuses) st += (st.empty() ? "" : ", ") + std::to_string(n) + " " + k;
              md += "|";
              for (const auto& k : gr.key) md += " " + k + " |";
              const auto [pm, ps] = mean_std(peak);
              md += " " + std::to_string(gr.runs.size()) + " | " + fmt_ms(tl) + " | " + fmt_ms(vl) + " | " +
                    fmt(mean_std(best).first, "%.0f") + " | " + fmt(pm, "%.4g") + " | " + st + " | " +
                    fmt(mean_std(wall).first, "%.1f") + " |\n";
              (void)ps;
            }
            // CSV: one row per run, every number.
            std::string csv = "run";
            for (const auto& a : axes) csv += "," + a;
            csv += ",seed,status,steps,final_train_loss,final_val_loss,best_val_loss,best_val_step,peak_max_logit,wall_s\n";
            for (const Run& r : runs) {
              csv += r.name;
              for (const auto& a : axes) csv += "," + r.axis.at(a);
              const RunSummary& s = r.series.summary;
              csv += "," + config_value(s.config, "run.seed") + "," + r.status + "," + std::to_string(s.last_step) +
                     "," + fmt(last_or_nan(r.series.eval_train), "%.6g") + "," +
                     fmt(last_or_nan(r.series.eval_val), "%.6g") + "," +
                     fmt(s.best_val_loss ? *s.best_val_loss : NAN, "%.6g") + "," + std::to_string(s.best_val_step) +
                     "," + fmt(s.max_logit_step >= 0 ? s.peak_max_logit : NAN, "%.6g") + "," +
                     fmt(last_or_nan(r.series.wall_s), "%.3f") + "\n";
            }
            fs::create_directories(out_dir);
            write_file_atomic(out_dir + "/report.md", md);
            write_file_atomic(out_dir + "/report.csv", csv);
            std::printf("%s", md.c_str());
            // Plots.
            auto label_of = [&](const Group& gr) {
              std::string l;
              for (size_t i = 0; i < gr.key.size(); ++i)
                l += (l.empty() ? "" : ", ") + (axes.empty() ? gr.key[i] : axes[i].substr(axes[i].rfind('.') + 1) + "=" + gr.key[i]);
              return l;
            };
            for (size_t pi = 0; pi < plots.size(); ++pi) {
              const SweepPlot& sp = plots[pi];
              Plot p;
              p.y_label = sp.metric;
              if (sp.kind == "curves") {
                p.title = sp.metric + " over steps, mean over seeds";
                p.x_label = "step";
                p.log_y = sp.metric == "max_logit";
                for (const Group& gr : groups) {
                  PlotSeries s{label_of(gr), {}, {}, false};
                  // Mean over the group's runs at the steps of its first run.
                  const Run& r0 = *gr.runs.front();
                  const auto& xs = sp.metric == "val_loss" ? r0.series.eval_step
                                   : sp.metric == "max_logit" ? r0.series.attn_step
                                                              : r0.series.step;
                  for (size_t i = 0; i < xs.size(); ++i) {
                    double sum = 0;
                    int n = 0;
                    for (const Run* r : gr.runs) {
                      const auto& ys = sp.metric == "val_loss" ? r->series.eval_val
                                       : sp.metric == "max_logit" ? r->series.attn_max
                                                                  : r->series.loss;
                      if (i < ys.size() && std::isfinite(ys[i])) sum += ys[i], ++n;
                    }
                    s.x.push_back(double(xs[i]));
                    s.y.push_back(n ? sum / n : NAN);
                  }
                  p.series.push_back(std::move(s));
                }
              } else {
                const std::string x = sp.x.empty() ? *by : sp.x;
                p.title = "final " + sp.metric + " against " + x + ", mean over seeds";
                p.x_label = x;
                p.log_x = sp.log_x;
                const size_t kx = size_t(std::find(axes.begin(), axes.end(), x) - axes.begin());
                if (kx >= axes.size()) throw ConfigError(sweep_copy + ": plots: x " + x + " is not an axis");
                // One line per combination of the other axes, points sorted by x.
                std::map<std::vector<std::string>, std::vector<std::pair<double, double>>> lines;
                for (const Group& gr : groups) {
                  std::vector<std::string> rest = gr.key;
                  rest.erase(rest.begin() + long(kx));
                  std::vector<double> ys;
                  for (const Run* r : gr.runs)
                    ys.push_back(sp.metric == "val_loss"    ? last_or_nan(r->series.eval_val)
                                 : sp.metric == "max_logit" ? double(r->series.summary.peak_max_logit)
                                                            : last_or_nan(r->series.eval_train));
                  lines[rest].push_back({std::strtod(gr.key[kx].c_str(), nullptr), mean_std(ys).first});
                }
                for (auto& [rest, pts] : lines) {
                  std::sort(pts.begin(), pts.end());
                  std::string l;
                  for (size_t i = 0, j = 0; i < axes.size(); ++i)
                    if (i != kx) l += (l.empty() ? "" : ", ") + axes[i].substr(axes[i].rfind('.') + 1) + "=" + rest[j++];
                  PlotSeries s{l.empty() ? sp.metric : l, {}, {}, true};
                  for (auto [xv, yv] : pts) s.x.push_back(xv), s.y.push_back(yv);
                  p.series.push_back(std::move(s));
                }
              }
              const std::string path = out_dir + "/plot" + std::to_string(pi + 1) + "_" + sp.kind + "_" + sp.metric + ".svg";
              write_plot_svg(path, p);
              if (!g.quiet) log::info("plot {}", path);
            }
            if (!g.quiet) log::info("wrote {}/report.md and report.csv ({} runs in {} rows)", out_dir, runs.size(),
                                    groups.size());
            return kExitOk;
          }};
}

}  // namespace attnlab::cli
