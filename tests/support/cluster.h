// tests/support/cluster.h — a real Tessera cluster for integration tests: one or more
// tessera-meta processes (a Raft group; ports picked free once and kept across restarts, since
// the members know each other by address), N tessera-chunk processes on 127.0.0.1 (ports chosen
// by the kernel, read from port files) with their data in a private temporary directory, and a
// tessera-mount (foreground child) on a real FUSE mount. Everything is unmounted, killed and removed when the Cluster goes away, also when
// a test fails; daemon logs that show a sanitizer report fail the test.
#pragma once
#include <signal.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/link_proxy.h"
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
    int metas = 1;
    std::vector<std::string> metaArgs;  // extra flags for every tessera-meta
    std::vector<std::string> chunkArgs;  // extra flags for every tessera-chunk
    // Meta servers send Raft traffic through LinkProxy pairs (tests/support/link_proxy.h,
    // tessera-meta --raft-route), so isolateMeta() can partition one; clients still reach
    // every meta server directly.
    bool linkProxies = false;
    int chunks = 6;
    std::string policy = "ec(4,2)";
    bool mount = true;
    std::string serverTimeout = "2s";  // meta marks a silent chunk server down
    std::string ioTimeout = "10s";     // mount: a shard RPC fails after this
    std::string heartbeat = "250ms";
    std::string metaTimeout = "20s";   // mount: a meta call fails after this (failovers included)
    std::vector<std::vector<std::string>> chunkArgsOf;  // [i]: extra flags for tessera-chunk i
    // Data directories (--data, one per disk) of chunk server i, instead of chunkDir(i).
    std::map<int, std::vector<std::string>> chunkData;
  };

  // One meta server's own view (the status RPC), as the test sees it.
  struct MetaView {
    bool reachable = false;
    uint64_t id = 0, term = 0, leader = 0, commit = 0, applied = 0, lastIndex = 0;
    std::string role;
  };

  explicit Cluster(Options options);
  Cluster() : Cluster(Options{}) {}
  ~Cluster();

  const std::string& dir() const { return tmp_.path(); }
  const std::string& mnt() const { return mountpoint_; }
  // Every meta server, "HOST:PORT,HOST:PORT,...", as daemons and tools take it.
  std::string meta() const;
  std::string metaAddress(int i) const { return "127.0.0.1:" + std::to_string(metaPorts_[i]); }
  std::string metaDir(int i) const { return dir() + "/meta" + std::to_string(i + 1); }
  std::string metaLog(int i) const { return dir() + "/meta" + std::to_string(i + 1) + ".log"; }
  int metas() const { return int(metas_.size()); }
  std::string chunkDir(int i) const { return dir() + "/chunk" + std::to_string(i); }
  int chunks() const { return int(chunks_.size()); }

  // Meta server i (0-based; member id i+1).
  void startMeta(int i);
  void stopMeta(int i, int sig = SIGTERM);
  bool metaRunning(int i) { return metas_[i].running(); }
  // Asks meta server i for its status (bounded by `timeoutMs`); reachable=false if it does not
  // answer.
  MetaView metaView(int i, int timeoutMs = 2'000);
  // The index of the meta server that leads, once a running server says it leads and every
  // other running server that answers agrees (or the group is one); -1 after the timeout.
  int leader(int timeoutMs = 10'000);
  // With linkProxies: cuts every link between meta server i and the others, both ways; heals
  // all cuts.
  void isolateMeta(int i);
  void healMetas();
  // Returns once the server listens (not yet registered: see waitChunksUp).
  void startChunk(int i);
  void stopChunk(int i, int sig = SIGTERM);
  // Starts one more chunk server (the next index, with chunkArgs) and returns its index; it is
  // listening, not yet registered (see waitChunksUp).
  int addChunk();
  bool chunkRunning(int i) { return chunks_[i].running(); }
  // Mounts at `mountpoint` (default dir()/mnt) with a foreground tessera-mount child.
  void mount(const std::string& mountpoint = "");
  void unmount();

  // Waits until the meta server reports `n` chunk servers up, every running one at its current
  // address; false after the timeout.
  bool waitChunksUp(int n, int timeoutMs = 20'000);
  // Waits until every chunk server that is up said, in a heartbeat sent after this call began,
  // that its write log is empty: every record applied into its stripe and trimmed. False after
  // the timeout.
  bool waitLogsApplied(int timeoutMs = 20'000);
  // `tessera status` output.
  std::string status();
  const Options& options() const { return options_; }
  pid_t mountPid() const { return mount_.pid(); }
  // Lines of daemon logs that report sanitizer errors or crashes.
  std::vector<std::string> logProblems() const;

 private:
  Options options_;
  TempDir tmp_;
  std::vector<uint16_t> metaPorts_;
  std::vector<Process> metas_;
  std::vector<std::vector<std::unique_ptr<LinkProxy>>> links_;  // [from][to], with linkProxies
  std::vector<Process> chunks_;
  std::vector<uint16_t> chunkPorts_;  // 0 until the server listens
  Process mount_;
  std::string mountpoint_;
};

// Another tessera-mount of the cluster at DIR/NAME (log DIR/NAME.log), talking to `meta` (""
// for every meta server), with the cluster's timeouts and then `args`. Unmounted and stopped
// (after a SIGCONT, should the test have frozen it) when it goes away, also when a test fails.
struct ExtraMount {
  ExtraMount(Cluster& cluster, const std::string& name, const std::string& meta = "",
             const std::vector<std::string>& args = {});
  ~ExtraMount();
  std::string path, log;
  Process process;
};

// --- file helpers for tests ---
// The whole file, or throws with errno's text.
std::string readAll(const std::string& path);
void writeAll(const std::string& path, const std::string& data);
// errno of a failed read of the whole file, 0 if it read.
int readErrno(const std::string& path);

}  // namespace tessera::test
