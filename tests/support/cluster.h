// tests/support/cluster.h — a real Tessera cluster for integration tests: tessera-meta and N
// tessera-chunk processes on 127.0.0.1 (ports chosen by the kernel, read from port files) with
// their data in a private temporary directory, and a tessera-mount (foreground child) on a real
// FUSE mount. Everything is unmounted, killed and removed when the Cluster goes away, also when
// a test fails; daemon logs that show a sanitizer report fail the test.
#pragma once
#include <signal.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace tessera::test {

// Directory holding the built binaries (meta/tessera-meta, chunk/tessera-chunk, ...).
std::string buildDir();
// Why integration tests cannot run here ("" when they can): no /dev/fuse, not root, ...
std::string fuseUnavailableReason();

class Cluster {
 public:
  struct Options {
    int chunks = 6;
    std::string policy = "ec(4,2)";
    bool mount = true;
    std::string serverTimeout = "2s";  // meta marks a silent chunk server down
    std::string ioTimeout = "10s";     // mount: a shard RPC fails after this
    std::string heartbeat = "250ms";
    std::vector<std::string> metaArgs;  // more tessera-meta flags, e.g. --session-timeout 2s
  };

  explicit Cluster(Options options);
  Cluster() : Cluster(Options{}) {}
  ~Cluster();

  const std::string& dir() const { return tmp_.path(); }
  const std::string& mnt() const { return mountpoint_; }
  std::string meta() const { return "127.0.0.1:" + std::to_string(metaPort_); }
  std::string chunkDir(int i) const { return dir() + "/chunk" + std::to_string(i); }
  int chunks() const { return int(chunks_.size()); }

  void startMeta();
  void stopMeta(int sig = SIGTERM);
  // Returns once the server listens (not yet registered: see waitChunksUp).
  void startChunk(int i);
  void stopChunk(int i, int sig = SIGTERM);
  bool chunkRunning(int i) { return chunks_[i].running(); }
  // Mounts at `mountpoint` (default dir()/mnt) with a foreground tessera-mount child.
  void mount(const std::string& mountpoint = "");
  void unmount();

  // Waits until the meta server reports `n` chunk servers up, every running one at its current
  // address; false after the timeout.
  bool waitChunksUp(int n, int timeoutMs = 20'000);
  // `tessera status` output.
  std::string status();
  // Lines of daemon logs that report sanitizer errors or crashes.
  std::vector<std::string> logProblems() const;

 private:
  Options options_;
  TempDir tmp_;
  uint16_t metaPort_ = 0;
  Process meta_;
  std::vector<Process> chunks_;
  std::vector<uint16_t> chunkPorts_;  // 0 until the server listens
  Process mount_;
  std::string mountpoint_;
};

// --- file helpers for tests ---
// The whole file, or throws with errno's text.
std::string readAll(const std::string& path);
void writeAll(const std::string& path, const std::string& data);
// errno of a failed read of the whole file, 0 if it read.
int readErrno(const std::string& path);

}  // namespace tessera::test
