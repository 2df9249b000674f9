#pragma once
// Data-parallel training of one run over MPI (a build with -DATTNLAB_MPI=ON, started by mpirun;
// docs/scaling_out.md). Every rank holds the whole model and optimizer. A step's batch is the
// batch that one process with world × train.batch_size sequences would draw; rank r trains on its
// r-th share, and the gradients are averaged with one allreduce over the contiguous gradient block
// (NOTE [param layout]), so every rank takes the same optimizer step. Rank 0 writes the run's files.
// Without MPI, or outside a launcher, there is one rank and every call is a no-op.
#include <cstdint>

namespace attnlab::dist {

// Starts MPI when the build has it and an MPI launcher started the process; call once, first.
void init(int* argc, char*** argv);
void finalize();
bool built_with_mpi();
int rank();
int size();
inline bool root() { return rank() == 0; }
// data ← the mean over ranks of data (n floats), in place.
void mean_inplace(float* data, int64_t n);
double mean(double v);
// data ← the elementwise max over ranks.
void max_inplace(float* data, int64_t n);
// True on every rank when v is true on any.
bool any(bool v);

}  // namespace attnlab::dist
