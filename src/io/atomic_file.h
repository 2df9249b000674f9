#pragma once
// NOTE [atomic replace]: checkpoint and run-log writers write <path>.tmp completely, close it,
// then call fsync_and_rename. rename(2) replaces path atomically: a reader, or a run restarted
// after a crash, sees either the old complete file or the new complete file, never a mix. The
// fsyncs make the same hold after a power loss. A crash can leave <path>.tmp behind; the next
// write truncates it.
#include <string>

namespace attnlab {

// fsync(tmp), rename(tmp, path), fsync(parent directory). CheckpointError on failure.
void fsync_and_rename(const std::string& tmp, const std::string& path);

// Writes text to <path>.tmp.<pid>, then fsync_and_rename: the one way a run writes a small file
// (config.yaml, a sweep's point.yaml, reports, plots). Error naming the file on failure.
void write_file_atomic(const std::string& path, const std::string& text);

// Removes path if it exists; never throws (cleanup of an abandoned tmp file).
void remove_quietly(const std::string& path) noexcept;

}  // namespace attnlab
