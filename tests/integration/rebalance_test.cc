// Data moves under load with real processes: a chunk server is drained and empty servers are
// rebalanced onto while a writer keeps overwriting (and fsyncing) a file whose chunk has to
// move — its lease is recalled, never broken: the writer sees no error, only a pause.
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <thread>

#include <kj/async-io.h>

#include "fs/options.h"
#include "fs/proto/meta.capnp.h"
#include "fs/rpc.h"
#include "fs/wire.h"
#include "tests/integration/helpers.h"

using namespace tessera;
using namespace tessera::test;

namespace {

double nowSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

uint64_t serverIdOf(const std::string& dir) {
  std::string text = readAll(dir + "/server.id");
  std::smatch m;
  REQUIRE(std::regex_search(text, m, std::regex("id = ([0-9]+)")));
  return std::stoull(m[1]);
}

// One call to the meta server at `address`, bounded.
template <typename Fn>
void withMeta(const std::string& address, Fn&& fn) {
  auto parsed = Address::parse(address);
  REQUIRE(parsed.ok());
  auto io = kj::setupAsyncIo();
  auto& timer = io.provider->getTimer();
  auto conn = Connection::open(io.provider->getNetwork(), timer, *parsed, 5'000).wait(io.waitScope);
  REQUIRE(conn.ok());
  auto service = (*conn)->bootstrap<proto::MetaService>();
  fn(service, timer, io.waitScope);
}

std::vector<ChunkDesc> chunksOf(const std::string& address, uint64_t inode) {
  std::vector<ChunkDesc> out;
  withMeta(address, [&](proto::MetaService::Client& service, kj::Timer& timer,
                        kj::WaitScope& ws) {
    auto req = service.getChunksRequest();
    req.setInode(inode);
    req.setFirst(0);
    req.setCount(1024);
    auto r = timer.timeoutAfter(10 * kj::SECONDS, req.send()).wait(ws);
    REQUIRE(fromWire(r.getError()).ok());
    for (auto c : r.getChunks()) {
      auto d = fromWire(c);
      REQUIRE(d.ok());
      out.push_back(*d);
    }
  });
  return out;
}

struct Usage {
  uint64_t id, capacity, used;
  bool up, draining;
};

std::vector<Usage> usageOf(const std::string& address) {
  std::vector<Usage> out;
  withMeta(address, [&](proto::MetaService::Client& service, kj::Timer& timer,
                        kj::WaitScope& ws) {
    auto r = timer.timeoutAfter(10 * kj::SECONDS, service.statusRequest().send()).wait(ws);
    REQUIRE(fromWire(r.getError()).ok());
    for (auto s : r.getServers()) {
      out.push_back(Usage{s.getId(), s.getCapacityBytes(), s.getUsedBytes(), s.getUp(),
                          s.getDraining()});
    }
  });
  return out;
}

// The largest distance (in points) of a live server's usage from the mean, as the planner
// counts it; with a text for messages.
double worstDeviation(const std::vector<Usage>& usage, std::string& text) {
  uint64_t capacity = 0, used = 0;
  for (auto& u : usage) {
    if (!u.up || u.draining || u.capacity == 0) continue;
    capacity += u.capacity;
    used += u.used;
  }
  double mean = capacity ? 100.0 * double(used) / double(capacity) : 0, worst = 0;
  text = "mean " + std::to_string(mean) + "%:";
  for (auto& u : usage) {
    if (!u.up || u.draining || u.capacity == 0) continue;
    double pct = 100.0 * double(u.used) / double(u.capacity);
    worst = std::max(worst, std::abs(pct - mean));
    text += " " + std::to_string(u.id) + "=" + std::to_string(pct) + "%";
  }
  return worst;
}

RunResult admin(Cluster& cluster, std::vector<std::string> args, const std::string& timeout = "5s",
                int limitMs = 60'000) {
  std::vector<std::string> argv{adminBin(), "--meta", cluster.meta(), "--timeout", timeout};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, limitMs);
}

size_t countIn(const std::string& path, const std::string& needle) {
  std::string text;
  try {
    text = readAll(path);
  } catch (...) {
    return 0;
  }
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// Overwrites random ranges of a file, each write followed by fsync, until told to stop; keeps
// the model of what the file holds and counts every failed call.
class Writer {
 public:
  Writer(const std::string& path, std::string initial, uint64_t seed)
      : path_(path), model_(std::move(initial)), rng_(seed) {}

  void start() {
    // Close-on-exec: chunk servers started meanwhile must not keep the file (and the mount)
    // busy.
    fd_ = open(path_.c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(fd_ >= 0);
    thread_ = std::thread([this] { loop(); });
  }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  ~Writer() { stop(); }

  int errors() const { return errors_; }
  int writes() const { return writes_; }
  double slowest() const { return slowest_; }
  std::string firstError() {
    std::lock_guard<std::mutex> lock(mu_);
    return firstError_;
  }
  const std::string& model() const { return model_; }

 private:
  void loop() {
    while (!stop_) {
      size_t len = size_t(4096) << (rng_() % 7);  // 4 KiB .. 256 KiB
      size_t at = rng_() % (model_.size() - len);
      at -= at % 512;
      std::string data = randomBytes(rng_, len);
      double t0 = nowSeconds();
      ssize_t n = pwrite(fd_, data.data(), data.size(), off_t(at));
      int saved = errno;
      bool ok = n == ssize_t(data.size());
      if (ok && fsync(fd_) != 0) {
        ok = false;
        saved = errno;
      }
      slowest_ = std::max(slowest_.load(), nowSeconds() - t0);
      if (!ok) {
        ++errors_;
        std::lock_guard<std::mutex> lock(mu_);
        if (firstError_.empty()) firstError_ = strerror(saved);
        continue;
      }
      model_.replace(at, len, data);
      ++writes_;
    }
  }

  std::string path_;
  std::string model_;
  std::mt19937_64 rng_;
  int fd_ = -1;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> errors_{0}, writes_{0};
  std::atomic<double> slowest_{0};
  std::mutex mu_;
  std::string firstError_;
};

}  // namespace

TEST_CASE("rebalance: drain and rebalance on a cluster with data and a running writer") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options options;
  options.chunks = 7;
  // Small capacities, so that a few MB of data make usage differences worth a rebalance.
  options.chunkArgs = {"--capacity", "48M"};
  options.metaArgs = {"--recall-hold", "5s"};
  Cluster cluster(options);
  REQUIRE(cluster.waitChunksUp(7));
  uint64_t seed = testSeed(53);
  std::mt19937_64 rng(seed);
  const double kBand = 5;

  std::string ec = cluster.mnt() + "/ec";
  std::string rep = cluster.mnt() + "/rep";
  REQUIRE(mkdir(ec.c_str(), 0755) == 0);
  REQUIRE(mkdir(rep.c_str(), 0755) == 0);
  REQUIRE(run({adminBin(), "policy", "set", rep, "replica(3)"}).exitCode == 0);
  std::map<std::string, std::string> files = {{ec + "/a", randomBytes(rng, 6'000'017)},
                                              {ec + "/b", randomBytes(rng, 3'000'001)},
                                              {ec + "/c", randomBytes(rng, 9'000'000)},
                                              {rep + "/d", randomBytes(rng, 2'000'003)},
                                              {rep + "/e", randomBytes(rng, 4'000'000)}};
  for (auto& [path, data] : files) writeAll(path, data);
  std::string image = ec + "/image";
  writeAll(image, randomBytes(rng, 4 << 20));
  std::map<std::string, uint64_t> inodes;
  for (auto& [path, data] : files) {
    struct stat st;
    REQUIRE(stat(path.c_str(), &st) == 0);
    inodes[path] = st.st_ino;
  }
  struct stat imageStat;
  REQUIRE(stat(image.c_str(), &imageStat) == 0);
  inodes[image] = imageStat.st_ino;

  // The writer starts; the server to drain holds a shard of its chunk, so the drain has to get
  // that chunk's lease back from a writer that never stops.
  Writer writer(image, readAll(image), seed + 1);
  writer.start();
  int leader = cluster.leader();
  REQUIRE(leader >= 0);
  auto imageChunks = chunksOf(cluster.metaAddress(leader), imageStat.st_ino);
  REQUIRE(imageChunks.size() == 1);
  std::map<uint64_t, int> shardsOn;
  for (auto& [path, inode] : inodes) {
    for (auto& c : chunksOf(cluster.metaAddress(leader), inode)) {
      for (ServerId s : c.servers) ++shardsOn[s.value];
    }
  }
  uint64_t victim = 0;
  for (ServerId s : imageChunks[0].servers) {
    if (victim == 0 || shardsOn[s.value] > shardsOn[victim]) victim = s.value;
  }
  int victimIndex = -1;
  for (int i = 0; i < cluster.chunks(); ++i) {
    if (serverIdOf(cluster.chunkDir(i)) == victim) victimIndex = i;
  }
  REQUIRE(victimIndex >= 0);
  // Let the writer get going: it holds the lease when the drain starts.
  double deadline = nowSeconds() + 30;
  while (writer.writes() < 20 && writer.errors() == 0 && nowSeconds() < deadline) usleep(50'000);
  REQUIRE(writer.writes() >= 20);

  MESSAGE("draining chunk server " << victim << " (" << shardsOn[victim]
                                   << " shards, one of them of the file being written)");
  auto drained =
      admin(cluster, {"drain", std::to_string(victim), "--wait"}, "120s", 180'000);
  INFO(drained.output);
  REQUIRE(drained.exitCode == 0);
  CHECK(writer.errors() == 0);
  size_t recalls = countIn(cluster.metaLog(leader), "recalling the write lease");
  MESSAGE("drained with " << writer.writes() << " writes so far; " << recalls
                          << " lease recalls; slowest write+fsync " << writer.slowest() << " s");
  CHECK(recalls > 0);
  for (auto& [path, inode] : inodes) {
    for (auto& c : chunksOf(cluster.metaAddress(leader), inode)) {
      CAPTURE(path);
      for (ServerId s : c.servers) CHECK(s.value != victim);
    }
  }
  // Its old copies go through the garbage list; then it is removed, holding nothing.
  deadline = nowSeconds() + 60;
  RunResult removed;
  while (nowSeconds() < deadline) {
    removed = admin(cluster, {"remove", std::to_string(victim)});
    if (removed.exitCode == 0) break;
    usleep(250'000);
  }
  INFO(removed.output);
  REQUIRE(removed.exitCode == 0);
  cluster.stopChunk(victimIndex);
  size_t leftFiles = 0;
  std::error_code ec2;
  for (auto& entry : std::filesystem::recursive_directory_iterator(
           cluster.chunkDir(victimIndex) + "/shards", ec2)) {
    if (entry.is_regular_file()) ++leftFiles;
  }
  CHECK(leftFiles == 0);

  // Two empty servers join: far below the mean.
  cluster.addChunk();
  cluster.addChunk();
  REQUIRE(cluster.waitChunksUp(8));
  leader = cluster.leader();
  REQUIRE(leader >= 0);
  std::string spread;
  double before = worstDeviation(usageOf(cluster.metaAddress(leader)), spread);
  MESSAGE("before rebalance: " << spread);
  CHECK(before > kBand);

  // A dry run prints the moves and changes nothing.
  std::map<uint64_t, std::vector<ChunkDesc>> mapBefore;
  for (auto& [path, inode] : inodes) mapBefore[inode] = chunksOf(cluster.metaAddress(leader), inode);
  RunResult dry;
  deadline = nowSeconds() + 30;
  while (nowSeconds() < deadline) {
    dry = admin(cluster, {"rebalance", "--dry-run", "--band", std::to_string(kBand)});
    if (dry.exitCode == 0 || dry.output.find("no usage known yet") == std::string::npos) break;
    usleep(250'000);
  }
  INFO(dry.output);
  REQUIRE(dry.exitCode == 0);
  CHECK(dry.output.find("dry run: nothing moved") != std::string::npos);
  CHECK(std::regex_search(dry.output, std::regex("[0-9]+ +[0-9]+ +[0-9]+ -> [0-9]+ +[0-9]+")));
  for (auto& [path, inode] : inodes) {
    if (path == image) continue;  // the writer's chunk changes epoch as it goes
    auto now = chunksOf(cluster.metaAddress(leader), inode);
    REQUIRE(now.size() == mapBefore[inode].size());
    for (size_t i = 0; i < now.size(); ++i) CHECK(now[i].servers == mapBefore[inode][i].servers);
  }
  // Bad input is one clear line, never a crash.
  for (auto bad : std::vector<std::vector<std::string>>{{"rebalance", "--band", "0"},
                                                         {"rebalance", "--band", "nan"},
                                                         {"rebalance", "--band", "101"},
                                                         {"rebalance", "--band"},
                                                         {"rebalance", "--stop", "--dry-run"},
                                                         {"rebalance", "extra"}}) {
    auto r = admin(cluster, bad);
    CAPTURE(r.output);
    CHECK(r.exitCode == 1);
    CHECK(r.output.find("error") != std::string::npos);
  }

  // Rebalance for real, until every live server is within the band (a move the writer took
  // back is retried by the leader; a second round is allowed for estimates that fell short).
  bool balanced = false;
  for (int round = 0; round < 3 && !balanced; ++round) {
    auto done = admin(cluster, {"rebalance", "--band", std::to_string(kBand), "--wait"}, "120s",
                      180'000);
    MESSAGE("rebalance round " << round << ":\n" << done.output);
    CHECK(done.exitCode == 0);
    // Old copies are deleted through heartbeats: usage settles within a few of them.
    deadline = nowSeconds() + 30;
    while (nowSeconds() < deadline && !balanced) {
      balanced = worstDeviation(usageOf(cluster.metaAddress(cluster.leader())), spread) <= kBand;
      if (!balanced) usleep(500'000);
    }
  }
  MESSAGE("after rebalance: " << spread);
  CHECK(balanced);
  CHECK(cluster.status().find("rebalance finished") != std::string::npos);

  writer.stop();
  MESSAGE("writer: " << writer.writes() << " writes with fsync, " << writer.errors()
                     << " errors, slowest " << writer.slowest() << " s");
  INFO("first writer error: " << writer.firstError());
  CHECK(writer.errors() == 0);
  CHECK(writer.writes() > 0);
  CHECK(countIn(cluster.metaLog(cluster.leader()), "recalling the write lease") >= recalls);

  // End state: fsck clean (placement rules included), nothing on the removed server, data
  // identical to the model, read afresh by a new mount.
  deadline = nowSeconds() + 60;
  RunResult fsck;
  while (nowSeconds() < deadline) {
    fsck = admin(cluster, {"fsck"});
    if (fsck.exitCode == 0) break;
    usleep(500'000);
  }
  INFO(fsck.output);
  CHECK(fsck.exitCode == 0);
  CHECK(fsck.output.find(" 0 misplaced") != std::string::npos);
  leader = cluster.leader();
  for (auto& [path, inode] : inodes) {
    for (auto& c : chunksOf(cluster.metaAddress(leader), inode)) {
      CAPTURE(path);
      std::set<ServerId> distinct(c.servers.begin(), c.servers.end());
      CHECK(distinct.size() == c.servers.size());
      for (ServerId s : c.servers) CHECK(s.value != victim);
      CHECK(c.staleShards == 0);
    }
  }
  cluster.unmount();
  cluster.mount();
  for (auto& [path, data] : files) {
    CAPTURE(path);
    CHECK((readAll(path) == data));
  }
  CHECK((readAll(image) == writer.model()));
}
