// The meta service as a Raft group of three real tessera-meta processes under a real mount:
// leader killed mid-stream, followers killed and restarted, the whole group restarted, a
// partitioned leader, a meta server whose log ends in a torn or garbled record.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "tests/integration/helpers.h"

using namespace tessera::test;
namespace stdfs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// Polls `ready` every 20 ms until it holds or `timeoutMs` passed.
template <typename F>
bool waitUntil(int timeoutMs, F ready) {
  auto end = Clock::now() + std::chrono::milliseconds(timeoutMs);
  while (Clock::now() < end) {
    if (ready()) return true;
    usleep(20'000);  // polling a condition, bounded by the timeout
  }
  return ready();
}

// A client that creates files with O_EXCL and renames them, one after the other, and records
// when each acknowledged operation started and ended. Exactly-once shows in its errors: a
// create applied twice fails with EEXIST, a rename applied twice with ENOENT.
class Workload {
 public:
  explicit Workload(std::string dir) : dir_(std::move(dir)) {
    thread_ = std::thread([this] { loop(); });
  }
  ~Workload() { finish(); }

  void finish() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int done() const { return done_; }
  std::string failure() {
    std::lock_guard lock(mu_);
    return failure_;
  }
  // Waits until `n` files are done (or a failure, or the timeout).
  bool waitDone(int n, int timeoutMs = 60'000) {
    return waitUntil(timeoutMs, [&] { return done_ >= n || !failure().empty(); }) && done_ >= n;
  }
  // Milliseconds from `t` to the end of the first operation that started after it, or -1.
  double firstSuccessAfter(Clock::time_point t) {
    std::lock_guard lock(mu_);
    for (auto& [start, end] : ops_) {
      if (start >= t) return std::chrono::duration<double, std::milli>(end - t).count();
    }
    return -1;
  }

 private:
  void loop() {
    for (int i = 0; !stop_; ++i) {
      std::string name = dir_ + "/f" + std::to_string(i);
      auto t0 = Clock::now();
      int fd = open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0) return fail("create " + name + ": " + strerror(errno));
      std::string content = "content of " + std::to_string(i);
      bool wrote = write(fd, content.data(), content.size()) == ssize_t(content.size());
      if (close(fd) != 0 || !wrote) return fail("write " + name + ": " + strerror(errno));
      auto t1 = Clock::now();
      if (rename(name.c_str(), (name + ".done").c_str()) != 0) {
        return fail("rename " + name + ": " + strerror(errno));
      }
      auto t2 = Clock::now();
      {
        std::lock_guard lock(mu_);
        ops_.push_back({t0, t1});
        ops_.push_back({t1, t2});
      }
      done_ = i + 1;
    }
  }
  void fail(const std::string& why) {
    std::lock_guard lock(mu_);
    failure_ = why;
  }

  std::string dir_;
  std::atomic<bool> stop_{false};
  std::atomic<int> done_{0};
  std::mutex mu_;
  std::string failure_;
  std::vector<std::pair<Clock::time_point, Clock::time_point>> ops_;
  std::thread thread_;
};

// Every file the workload acknowledged is there once, renamed, with its content; nothing else.
void checkWorkload(const std::string& dir, int done) {
  std::set<std::string> names;
  for (auto& e : stdfs::directory_iterator(dir)) names.insert(e.path().filename().string());
  CHECK(int(names.size()) == done);
  int missing = 0, wrong = 0;
  for (int i = 0; i < done; ++i) {
    std::string name = "f" + std::to_string(i) + ".done";
    if (!names.count(name)) {
      ++missing;
      continue;
    }
    if (readAll(dir + "/" + name) != "content of " + std::to_string(i)) ++wrong;
  }
  CHECK(missing == 0);
  CHECK(wrong == 0);
}

// What each meta server says of itself, for failure messages.
std::string views(Cluster& cluster) {
  std::string out;
  for (int i = 0; i < cluster.metas(); ++i) {
    auto v = cluster.metaView(i);
    out += "member " + std::to_string(i + 1) + ": ";
    if (!v.reachable) {
      out += "no answer\n";
      continue;
    }
    out += v.role + " term " + std::to_string(v.term) + " leader " + std::to_string(v.leader) +
           " commit " + std::to_string(v.commit) + " applied " + std::to_string(v.applied) +
           " last " + std::to_string(v.lastIndex) + "\n";
  }
  return out;
}

// Until every running meta server applied the same index and one leads; false after the timeout.
bool waitConverged(Cluster& cluster, int timeoutMs = 30'000) {
  bool converged = waitUntil(timeoutMs, [&] {
    if (cluster.leader(2'000) < 0) return false;
    uint64_t applied = 0;
    for (int i = 0; i < cluster.metas(); ++i) {
      if (!cluster.metaRunning(i)) continue;
      auto v = cluster.metaView(i);
      if (!v.reachable || v.applied == 0 || v.applied != v.commit) return false;
      if (applied && v.applied != applied) return false;
      applied = v.applied;
    }
    return true;
  });
  if (!converged) MESSAGE("not converged:\n" << views(cluster));
  return converged;
}

Cluster::Options threeMetas() {
  Cluster::Options o;
  o.metas = 3;
  o.chunks = 4;
  o.policy = "replica(2)";
  o.metaTimeout = "30s";
  return o;
}

// The newest segment of a meta server's Raft log.
std::string newestSegment(const std::string& raftDir) {
  std::string newest;
  for (auto& e : stdfs::directory_iterator(raftDir)) {
    std::string name = e.path().filename().string();
    if (name.rfind("wal-", 0) == 0 && name > stdfs::path(newest).filename().string()) {
      newest = e.path().string();
    }
  }
  return newest;
}

}  // namespace

TEST_CASE("meta cluster: creates and renames survive leader kills, follower restarts and a full restart") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster(threeMetas());
  const std::string d = cluster.mnt() + "/work";
  REQUIRE(mkdir(d.c_str(), 0755) == 0);
  Workload work(d);
  REQUIRE_MESSAGE(work.waitDone(700), work.failure());

  // 1. The leader dies. Operations wait for the next one, they do not fail.
  std::vector<double> failovers;
  for (int round = 0; round < 2; ++round) {
    int l = cluster.leader();
    REQUIRE(l >= 0);
    auto killed = Clock::now();
    cluster.stopMeta(l, SIGKILL);
    int before = work.done();
    REQUIRE_MESSAGE(work.waitDone(before + 300), work.failure());
    double ms = work.firstSuccessAfter(killed);
    failovers.push_back(ms);
    MESSAGE("failover " << round + 1 << ": leader (member " << l + 1 << ") killed -> first "
                        << "successful operation after " << ms << " ms");
    int next = cluster.leader();
    CHECK(next >= 0);
    CHECK(next != l);
    cluster.startMeta(l);
    REQUIRE(waitConverged(cluster));
  }
  CHECK(*std::max_element(failovers.begin(), failovers.end()) > 0);

  // 2. Each follower in turn is killed and comes back while the work goes on.
  int l = cluster.leader();
  REQUIRE(l >= 0);
  for (int i = 0; i < cluster.metas(); ++i) {
    if (i == l) continue;
    cluster.stopMeta(i, SIGKILL);
    int before = work.done();
    REQUIRE_MESSAGE(work.waitDone(before + 200), work.failure());
    cluster.startMeta(i);
    REQUIRE(waitConverged(cluster));
  }

  // 3. All three die at once and come back: nothing acknowledged is lost.
  for (int i = 0; i < cluster.metas(); ++i) cluster.stopMeta(i, SIGKILL);
  int before = work.done();
  for (int i = 0; i < cluster.metas(); ++i) cluster.startMeta(i);
  REQUIRE_MESSAGE(work.waitDone(before + 300), work.failure());

  work.finish();
  REQUIRE_MESSAGE(work.failure().empty(), work.failure());
  MESSAGE(work.done() << " files created and renamed through 2 leader kills, 2 follower "
                         "restarts and a full restart");
  checkWorkload(d, work.done());
  REQUIRE(waitConverged(cluster));
  auto status = run({adminBin(), "--meta", cluster.meta(), "status"}, 30'000);
  CHECK_MESSAGE(status.exitCode == 0, status.output);
  REQUIRE(cluster.waitChunksUp(cluster.chunks()));
}

TEST_CASE("meta cluster: a partitioned leader commits nothing, the majority moves on, the heal converges") {
  TESSERA_REQUIRE_FUSE();
  auto options = threeMetas();
  options.linkProxies = true;
  Cluster cluster(options);
  const std::string d = cluster.mnt() + "/work";
  REQUIRE(mkdir(d.c_str(), 0755) == 0);
  Workload work(d);
  REQUIRE_MESSAGE(work.waitDone(100), work.failure());

  int old = cluster.leader();
  REQUIRE(old >= 0);
  ExtraMount second(cluster, "mnt2", cluster.metaAddress(old), {"--meta-timeout", "60s"});
  auto before = cluster.metaView(old);
  cluster.isolateMeta(old);
  // The majority elects a leader of a later term among themselves.
  int next = -1;
  REQUIRE(waitUntil(20'000, [&] {
    for (int i = 0; i < cluster.metas(); ++i) {
      if (i == old) continue;
      auto v = cluster.metaView(i);
      if (v.role == "leader" && v.term > before.term) next = i;
    }
    return next >= 0;
  }));
  MESSAGE("member " << old + 1 << " isolated; member " << next + 1 << " leads");
  // ...and serves: the mount's work goes on (it finds the new leader itself).
  int done = work.done();
  REQUIRE_MESSAGE(work.waitDone(done + 100), work.failure());

  // A second mount that knows only the old leader: its mkdir reaches the old leader alone,
  // which cannot commit it. It completes once the partition heals (through the leader that
  // the old one then names), exactly once.
  auto isolated = cluster.metaView(old);
  CHECK(isolated.commit >= before.commit);
  std::atomic<int> probeErrno{-1};
  std::thread probe([&] {
    probeErrno = mkdir((second.path + "/work/probe").c_str(), 0755) == 0 ? 0 : errno;
  });
  // The old leader steps down once it misses its majority (check-quorum); until the heal the
  // probe stays unanswered and nothing it was given commits.
  CHECK(waitUntil(20'000, [&] { return cluster.metaView(old).role != "leader"; }));
  CHECK(probeErrno == -1);
  auto after = cluster.metaView(old);
  CHECK(after.commit == isolated.commit);
  struct stat st;
  CHECK(stat((d + "/probe").c_str(), &st) != 0);

  cluster.healMetas();
  probe.join();
  CHECK(probeErrno == 0);
  done = work.done();
  REQUIRE_MESSAGE(work.waitDone(done + 100), work.failure());
  work.finish();
  REQUIRE_MESSAGE(work.failure().empty(), work.failure());
  REQUIRE(waitConverged(cluster));
  auto healed = cluster.metaView(old);
  CHECK(healed.role == "follower");
  CHECK(stat((d + "/probe").c_str(), &st) == 0);
  // The workload's names, the probe, nothing else.
  CHECK(unlink((d + "/probe").c_str()) != 0);  // a directory
  CHECK(rmdir((d + "/probe").c_str()) == 0);
  checkWorkload(d, work.done());
}

TEST_CASE("meta cluster: a meta server whose log ends in a torn or garbled record restarts and catches up") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster(threeMetas());
  const std::string d = cluster.mnt() + "/work";
  REQUIRE(mkdir(d.c_str(), 0755) == 0);
  Workload work(d);
  REQUIRE_MESSAGE(work.waitDone(200), work.failure());
  int l = cluster.leader();
  REQUIRE(l >= 0);
  int f = (l + 1) % cluster.metas();
  cluster.stopMeta(f, SIGKILL);
  std::string segment = newestSegment(cluster.metaDir(f) + "/raft");
  REQUIRE(!segment.empty());
  auto size = stdfs::file_size(segment);
  REQUIRE(size > 200);
  SUBCASE("torn: the last records cut, the last one short") {
    // Cuts records this server had acknowledged (synced) too: the leader must notice that the
    // follower lost them, or it refuses every append forever.
    stdfs::resize_file(segment, size - std::min<uintmax_t>(size / 4, 3'001));
  }
  SUBCASE("garbled: the last bytes overwritten") {
    int fd = open(segment.c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    std::string junk(24, '\x5a');
    REQUIRE(pwrite(fd, junk.data(), junk.size(), off_t(size - junk.size())) == ssize_t(junk.size()));
    close(fd);
  }
  int before = work.done();
  REQUIRE_MESSAGE(work.waitDone(before + 100), work.failure());
  cluster.startMeta(f);
  REQUIRE_MESSAGE(waitConverged(cluster), "member " << f + 1 << " did not catch up:\n"
                                                    << cluster.status());
  std::string log = readAll(cluster.metaLog(f));
  CHECK(log.find("torn tail") != std::string::npos);
  // The repaired member counts: with the leader gone it and the third one go on.
  cluster.stopMeta(l, SIGKILL);
  before = work.done();
  REQUIRE_MESSAGE(work.waitDone(before + 100), work.failure());
  work.finish();
  checkWorkload(d, work.done());
}
