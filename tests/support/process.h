// tests/support/process.h — child processes for integration tests. Each child runs in its own
// process group and gets SIGKILL if the test process dies (PR_SET_PDEATHSIG), so a crashed test
// leaves no daemon behind. Every wait is bounded.
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

namespace tessera::test {

class Process {
 public:
  Process() = default;
  // Starts argv[0] (a path) with stdout and stderr appended to `logFile`.
  static Process spawn(const std::vector<std::string>& argv, const std::string& logFile);
  Process(Process&& o) noexcept : pid_(o.pid_), status_(o.status_) { o.pid_ = -1; }
  Process& operator=(Process&& o) noexcept;
  ~Process();  // SIGKILLs and reaps a child still running

  pid_t pid() const { return pid_; }
  bool running();
  void signal(int sig);
  // Waits up to `timeoutMs` for the exit; the wait status, or -1 if still running.
  int wait(int timeoutMs);
  // SIGTERM, wait up to `graceMs`, then SIGKILL; reaps.
  void stop(int graceMs = 10'000);

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

struct RunResult {
  int exitCode = -1;   // -1: killed by a signal or timed out
  std::string output;  // stdout and stderr together
  bool timedOut = false;
};

// Runs a command to completion (killed after `timeoutMs`).
RunResult run(const std::vector<std::string>& argv, int timeoutMs = 120'000);
// bash -c `script`.
RunResult sh(const std::string& script, int timeoutMs = 120'000);

}  // namespace tessera::test
