// Raft snapshots with real meta servers: the leader compacts its log while a follower is down;
// the follower comes back, finds the entries it lacks compacted away, and catches up by
// InstallSnapshot (the leader streams its LevelDB state); then the leader dies and every file
// is still there through the member that was restored from a snapshot.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "tests/integration/helpers.h"

using namespace tessera::test;

namespace {

std::set<std::string> walSegments(const std::string& raftDir) {
  std::set<std::string> out;
  DIR* d = opendir(raftDir.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind("wal-", 0) == 0) out.insert(name);
  }
  closedir(d);
  return out;
}

std::string slurpFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The index of the last "compacted the log up to N" line in a meta log, 0 if none.
uint64_t lastCompaction(const std::string& log) {
  const std::string marker = "compacted the log up to ";
  size_t at = log.rfind(marker);
  if (at == std::string::npos) return 0;
  return std::strtoull(log.c_str() + at + marker.size(), nullptr, 10);
}

template <typename F>
bool waitUntil(int timeoutMs, F&& done) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return done();
}

std::set<std::string> listDir(const std::string& dir) {
  std::set<std::string> out;
  DIR* d = opendir(dir.c_str());
  REQUIRE_MESSAGE(d != nullptr, "opendir " << dir << ": " << strerror(errno));
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") out.insert(name);
  }
  closedir(d);
  return out;
}

}  // namespace

TEST_CASE("meta snapshot: a follower behind the compacted log catches up by InstallSnapshot") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options options;
  options.metas = 3;
  // Compact often, keep few entries: a follower down for a few hundred operations must take
  // a snapshot.
  options.metaArgs = {"--snapshot-entries", "200", "--snapshot-keep", "20"};
  options.chunks = 3;
  options.policy = "replica(3)";
  Cluster cluster(options);

  int leader = cluster.leader();
  REQUIRE(leader >= 0);
  int follower = (leader + 1) % 3;
  std::string followerRaft = cluster.metaDir(follower) + "/raft";
  Cluster::MetaView stopped = cluster.metaView(follower);
  REQUIRE(stopped.reachable);
  cluster.stopMeta(follower);
  std::set<std::string> oldSegments = walSegments(followerRaft);
  REQUIRE(!oldSegments.empty());

  // Thousands of files in a few directories, through the mount.
  constexpr int kDirs = 8;
  constexpr int kFiles = 2000;
  std::map<std::string, std::set<std::string>> expected;
  for (int d = 0; d < kDirs; ++d) {
    std::string dir = "d" + std::to_string(d);
    REQUIRE(mkdir((cluster.mnt() + "/" + dir).c_str(), 0755) == 0);
    expected[dir];
  }
  for (int i = 0; i < kFiles; ++i) {
    std::string dir = "d" + std::to_string(i % kDirs);
    std::string name = "f" + std::to_string(i);
    int fd = open((cluster.mnt() + "/" + dir + "/" + name).c_str(), O_CREAT | O_EXCL | O_WRONLY,
                  0644);
    REQUIRE_MESSAGE(fd >= 0, "create " << dir << "/" << name << ": " << strerror(errno));
    close(fd);
    expected[dir].insert(name);
  }

  // The leader compacted past everything the stopped follower has.
  uint64_t compacted = 0;
  REQUIRE(waitUntil(20'000, [&] {
    compacted = lastCompaction(slurpFile(cluster.metaLog(leader)));
    return compacted > stopped.lastIndex;
  }));
  MESSAGE("follower stopped at index " << stopped.lastIndex << ", leader compacted up to "
                                       << compacted);

  cluster.startMeta(follower);
  Cluster::MetaView lv, fv;
  bool caughtUp = waitUntil(60'000, [&] {
    lv = cluster.metaView(leader);
    fv = cluster.metaView(follower);
    return lv.reachable && fv.reachable && fv.applied == lv.applied && fv.applied > compacted;
  });
  INFO("leader applied " << lv.applied << ", follower applied " << fv.applied);
  INFO(cluster.status());
  REQUIRE(caughtUp);
  std::string followerLog = slurpFile(cluster.metaLog(follower));
  CHECK(followerLog.find("(InstallSnapshot)") != std::string::npos);
  CHECK(slurpFile(cluster.metaLog(leader)).find("has the snapshot at index") != std::string::npos);
  // The log segments from before the stop were covered by the snapshot and are gone.
  REQUIRE(waitUntil(10'000, [&] {
    auto now = walSegments(followerRaft);
    for (auto& s : oldSegments) {
      if (now.count(s)) return false;
    }
    return true;
  }));

  // The leader dies; the group goes on with the restored follower, and every file is there.
  cluster.stopMeta(leader, SIGKILL);
  int next = cluster.leader(30'000);
  REQUIRE(next >= 0);
  CHECK(next != leader);
  for (auto& [dir, names] : expected) {
    CAPTURE(dir);
    CHECK(listDir(cluster.mnt() + "/" + dir) == names);
  }
  struct stat st;
  CHECK(stat((cluster.mnt() + "/d3/f1003").c_str(), &st) == 0);
  // And it still takes changes.
  int fd = open((cluster.mnt() + "/after-failover").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
  CHECK(fd >= 0);
  if (fd >= 0) close(fd);
  int survivor = 3 - leader - next;
  CHECK(waitUntil(20'000, [&] {
    Cluster::MetaView nv = cluster.metaView(next), sv = cluster.metaView(survivor);
    return nv.reachable && sv.reachable && sv.applied == nv.applied;
  }));

  // The killed leader restarts from its compacted log and its store, and catches up.
  cluster.startMeta(leader);
  Cluster::MetaView nv, ov;
  bool rejoined = waitUntil(60'000, [&] {
    nv = cluster.metaView(next);
    ov = cluster.metaView(leader);
    return nv.reachable && ov.reachable && ov.applied == nv.applied;
  });
  INFO("new leader applied " << nv.applied << ", old leader applied " << ov.applied);
  CHECK(rejoined);
}
