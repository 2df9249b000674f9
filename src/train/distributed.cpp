#include "train/distributed.h"

#include <algorithm>
#include <cstdlib>

#ifdef ATTNLAB_WITH_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only (Open MPI's deprecated C++ bindings need their own library)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

#include "util/check.h"

namespace attnlab::dist {
namespace {
int g_rank = 0, g_size = 1;
[[maybe_unused]] bool g_started = false;
}  // namespace

bool built_with_mpi() {
#ifdef ATTNLAB_WITH_MPI
  return true;
#else
  return false;
#endif
}

void init(int* argc, char*** argv) {
#ifdef ATTNLAB_WITH_MPI
  // Only under a launcher (Open MPI, MPICH/Hydra or Slurm's PMI set these): a plain `attnlab` run
  // of an MPI build stays a single process and never touches MPI.
  if (!std::getenv("OMPI_COMM_WORLD_SIZE") && !std::getenv("PMI_SIZE") && !std::getenv("PMIX_RANK")) return;
  MPI_Init(argc, argv);
  g_started = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
#else
  (void)argc;
  (void)argv;
#endif
}

void finalize() {
#ifdef ATTNLAB_WITH_MPI
  if (g_started) MPI_Finalize();
  g_started = false;
#endif
}

int rank() { return g_rank; }
int size() { return g_size; }

void mean_inplace(float* data, int64_t n) {
  if (g_size == 1) return;
#ifdef ATTNLAB_WITH_MPI
  for (int64_t off = 0; off < n;) {  // MPI counts are int
    const int count = int(std::min<int64_t>(n - off, int64_t(1) << 30));
    MPI_Allreduce(MPI_IN_PLACE, data + off, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    off += count;
  }
  const float inv = 1.f / float(g_size);
  for (int64_t i = 0; i < n; ++i) data[i] *= inv;
#endif
}

double mean(double v) {
  if (g_size == 1) return v;
#ifdef ATTNLAB_WITH_MPI
  MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  v /= g_size;
#endif
  return v;
}

void max_inplace(float* data, int64_t n) {
  if (g_size == 1) return;
#ifdef ATTNLAB_WITH_MPI
  MPI_Allreduce(MPI_IN_PLACE, data, int(n), MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD);
#endif
}

bool any(bool v) {
  if (g_size == 1) return v;
#ifdef ATTNLAB_WITH_MPI
  int x = v ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return x != 0;
#else
  return v;
#endif
}

}  // namespace attnlab::dist
