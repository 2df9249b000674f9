#include "train/signals.h"

#include <atomic>
#include <csignal>

namespace attnlab {
namespace {
std::atomic<int> g_requests{0};
struct sigaction g_prev_int, g_prev_term, g_prev_hup;

void on_signal(int sig) {
  if (g_requests.fetch_add(1) >= 1) {  // second signal: default action now
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}
}  // namespace

InterruptGuard::InterruptGuard() {
  g_requests = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &g_prev_int);
  sigaction(SIGTERM, &sa, &g_prev_term);
  // A closed terminal stops the run as Ctrl-C does, unless SIGHUP is ignored (`nohup`).
  sigaction(SIGHUP, nullptr, &g_prev_hup);
  if (g_prev_hup.sa_handler != SIG_IGN) sigaction(SIGHUP, &sa, nullptr);
}

InterruptGuard::~InterruptGuard() {
  sigaction(SIGINT, &g_prev_int, nullptr);
  sigaction(SIGTERM, &g_prev_term, nullptr);
  sigaction(SIGHUP, &g_prev_hup, nullptr);
}

bool interrupt_requested() { return g_requests.load() > 0; }
void request_interrupt() { g_requests.fetch_add(1); }

}  // namespace attnlab
