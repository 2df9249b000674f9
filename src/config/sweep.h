#pragma once
// Sweep files: a base config, overrides for every point, and axes whose product is the set of
// points (docs/sweeps.md). Each point is an ordinary run: its config is the base config with the
// sweep's overrides, then the point's own, then run.name and run.out_dir set by the sweep.
//
//   name: qk_clip                       # optional; default: the file's stem
//   base: ../../configs/shakespeare_char.yaml   # relative to this file
//   out_dir: runs                       # optional; points go to <out_dir>/<name>/<point>/
//   overrides: [train.steps=2000]       # every point
//   grid:                               # the product of these lists, in this order
//     optimizer.name: [adamw, muon]
//     attention.type: [mha, mla]
//   zip:                                # paired lists of equal length: one axis
//     muon.lr: [0.02, 0.08]
//     train.qk_clip.enabled: [false, true]
//   seeds: [1, 2, 3]                    # run.seed, the innermost axis
//   plots:                              # drawn by `attnlab report`
//     - {kind: curves, metric: val_loss}
//     - {kind: final, x: muon.lr, metric: train_loss, log_x: true}
#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"

namespace attnlab {

// One value of an axis: its YAML flow text (what an override takes) and where it was written.
struct SweepValue {
  std::string text;
  std::string where;  // "file:line:col"
};
struct SweepAxis {
  std::string key;
  std::vector<SweepValue> values;
};
struct SweepPlot {
  std::string kind;    // curves: a metric over steps, one line per point; final: the final metric against x
  std::string metric;  // train_loss | val_loss | max_logit
  std::string x;       // final: the axis key on the x axis
  bool log_x = false;
};

struct SweepFile {
  std::string path;  // as given
  std::string name;
  std::string base;     // resolved against the sweep file's directory
  std::string out_dir;  // as written (relative paths are relative to the working directory, as run.out_dir)
  std::vector<std::string> overrides;
  std::vector<SweepAxis> grid;
  std::vector<SweepAxis> zip;  // every list has the same length
  std::vector<SweepValue> seeds;
  std::vector<SweepPlot> plots;
  std::string text;  // the file's bytes, kept beside the runs
};

// One run of a sweep: its directory name and the overrides that make it (axis keys in file order:
// grid, zip, then run.seed), each with the sweep-file position of its value.
struct SweepPoint {
  std::string name;
  std::vector<std::string> overrides;
  std::vector<std::string> where;
};

// Reads and checks a sweep file's structure; ConfigError naming file:line:col otherwise.
SweepFile load_sweep(const std::string& path);
// The most points a sweep file may make (grid product x zip rows x seeds); load_sweep refuses more.
inline constexpr uint64_t kMaxSweepPoints = 10000;

// The points in order: grid product (first key slowest), then zip rows, then seeds.
std::vector<SweepPoint> sweep_points(const SweepFile& s);
// A point's full config: base, sweep overrides, the point's overrides, run.name and run.out_dir.
// A bad value or key of an axis is a ConfigError naming the sweep file's line and the key.
LoadedConfig point_config(const SweepFile& s, const SweepPoint& p);
// Where the sweep's points live: <out_dir>/<name>.
std::string sweep_dir(const SweepFile& s);

}  // namespace attnlab
