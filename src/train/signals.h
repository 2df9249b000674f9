#pragma once
// SIGINT/SIGTERM/SIGHUP during training: the first one asks the loop to stop after the current step
// (checkpoint and log are written, status "interrupted"); a second one ends the process at once.
// SIGHUP is left alone when it is ignored at start (`nohup`).
namespace attnlab {

class InterruptGuard {
 public:
  InterruptGuard();   // installs the handlers and clears any earlier request
  ~InterruptGuard();  // restores the previous handlers
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
};

bool interrupt_requested();
void request_interrupt();  // what the handler does; tests call it directly

}  // namespace attnlab
