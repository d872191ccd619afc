// Self-healing with real processes: a chunk server killed for good has its shards rebuilt on
// the others once the grace period passed, and `tessera fsck` tells the state all along.
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <regex>
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

// The id a chunk server's data directory was registered under (DIR/server.id).
uint64_t serverIdOf(const std::string& dir) {
  std::string text = readAll(dir + "/server.id");
  std::smatch m;
  REQUIRE(std::regex_search(text, m, std::regex("id = ([0-9]+)")));
  return std::stoull(m[1]);
}

// The chunk descriptors of the file with inode `inode`, asked of the meta server at `address`.
std::vector<ChunkDesc> chunksOf(const std::string& address, uint64_t inode) {
  auto parsed = Address::parse(address);
  REQUIRE(parsed.ok());
  auto io = kj::setupAsyncIo();
  auto& timer = io.provider->getTimer();
  auto conn = Connection::open(io.provider->getNetwork(), timer, *parsed, 5'000).wait(io.waitScope);
  REQUIRE(conn.ok());
  auto service = (*conn)->bootstrap<proto::MetaService>();
  auto req = service.getChunksRequest();
  req.setInode(inode);
  req.setFirst(0);
  req.setCount(1024);
  auto r = timer.timeoutAfter(10 * kj::SECONDS, req.send()).wait(io.waitScope);
  REQUIRE(fromWire(r.getError()).ok());
  std::vector<ChunkDesc> out;
  for (auto c : r.getChunks()) {
    auto d = fromWire(c);
    REQUIRE(d.ok());
    out.push_back(*d);
  }
  return out;
}

struct Fsck {
  int exitCode = -1;
  std::string output;
  double rebuiltMiB = 0;
  uint64_t running = 0, done = 0;
};

Fsck fsck(Cluster& cluster) {
  auto r = run({adminBin(), "--meta", cluster.meta(), "--timeout", "5s", "fsck"}, 30'000);
  Fsck f{r.exitCode, r.output};
  std::smatch m;
  if (std::regex_search(f.output, m, std::regex("([0-9.]+) MiB rebuilt"))) {
    f.rebuiltMiB = std::stod(m[1]);
  }
  if (std::regex_search(f.output, m, std::regex("([0-9]+) running, ([0-9]+) done"))) {
    f.running = std::stoull(m[1]);
    f.done = std::stoull(m[2]);
  }
  return f;
}

}  // namespace

TEST_CASE("repair: a chunk server killed for good is rebuilt on the others — data identical") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options options;
  options.chunks = 7;
  options.serverTimeout = "2s";
  options.metaArgs = {"--repair-grace", "3s"};
  Cluster cluster(options);
  REQUIRE(cluster.waitChunksUp(7));
  uint64_t seed = testSeed(41);
  std::mt19937_64 rng(seed);

  std::string ec = cluster.mnt() + "/ec";
  std::string rep = cluster.mnt() + "/rep";
  REQUIRE(mkdir(ec.c_str(), 0755) == 0);
  REQUIRE(mkdir(rep.c_str(), 0755) == 0);
  REQUIRE(run({adminBin(), "policy", "set", rep, "replica(3)"}).exitCode == 0);
  std::map<std::string, size_t> sizes = {{ec + "/small", 100'003},
                                         {ec + "/stripe", 262'144},
                                         {ec + "/multi", 9'000'017},
                                         {ec + "/two-chunks", (64u << 20) + 5'000'000},
                                         {rep + "/copy", 6'000'011}};
  std::map<std::string, std::string> sums;
  for (auto& [path, size] : sizes) {
    writeAll(path, randomBytes(rng, size));
    sums[path] = sha256(path);
    REQUIRE(sums[path].size() == 64);
  }
  auto before = fsck(cluster);
  INFO(before.output);
  CHECK(before.exitCode == 0);

  // Kill the server holding the most shards of these files, for good.
  int leader = cluster.leader();
  REQUIRE(leader >= 0);
  std::map<uint64_t, int> shardsOn;
  std::map<std::string, uint64_t> inodes;
  for (auto& [path, size] : sizes) {
    struct stat st;
    REQUIRE(stat(path.c_str(), &st) == 0);
    inodes[path] = st.st_ino;
    for (auto& c : chunksOf(cluster.metaAddress(leader), st.st_ino)) {
      for (ServerId s : c.servers) ++shardsOn[s.value];
    }
  }
  int victim = 0;
  uint64_t victimId = 0;
  for (int i = 0; i < cluster.chunks(); ++i) {
    uint64_t id = serverIdOf(cluster.chunkDir(i));
    if (shardsOn[id] > shardsOn[victimId]) {
      victim = i;
      victimId = id;
    }
  }
  MESSAGE("killing chunk server " << victimId << " (" << shardsOn[victimId] << " shards of the files)");
  REQUIRE(shardsOn[victimId] > 0);
  cluster.stopChunk(victim, SIGKILL);

  // Degraded first (the grace period), then rebuilt: fsck clean within a bounded wait.
  double killed = nowSeconds();
  Fsck last;
  bool sawDegraded = false;
  double repairSeen = 0;  // first poll that saw a rebuild running or done
  double deadline = killed + 180;
  while (nowSeconds() < deadline) {
    last = fsck(cluster);
    if (last.exitCode == 1) sawDegraded = true;
    if (repairSeen == 0 && (last.running > 0 || last.done > 0)) repairSeen = nowSeconds();
    if (last.exitCode == 0 && sawDegraded) break;
    usleep(100'000);
  }
  double healed = nowSeconds();
  INFO(last.output);
  REQUIRE(last.exitCode == 0);
  CHECK(sawDegraded);
  CHECK(last.rebuiltMiB > 0);
  // Polling through the admin command: the figure is coarse (and a lower bound on the rate).
  double rebuilding = std::max(healed - (repairSeen ? repairSeen : killed), 0.1);
  MESSAGE("repair: " << last.done << " shards, " << last.rebuiltMiB << " MiB rebuilt; fsck clean "
                     << healed - killed << " s after the kill (2 s server timeout + 3 s grace); "
                     << "at least " << last.rebuiltMiB / rebuilding << " MiB/s over the "
                     << rebuilding << " s rebuilds were seen running");

  // No chunk descriptor names the dead server any more.
  leader = cluster.leader();
  REQUIRE(leader >= 0);
  for (auto& [path, inode] : inodes) {
    auto chunks = chunksOf(cluster.metaAddress(leader), inode);
    CHECK(!chunks.empty());
    for (auto& c : chunks) {
      CAPTURE(path);
      CAPTURE(c.id.value);
      for (ServerId s : c.servers) CHECK(s.value != victimId);
      CHECK(c.staleShards == 0);
    }
  }

  // The data is identical, read afresh from the shards (a new mount has no page cache).
  cluster.unmount();
  cluster.mount();
  for (auto& [path, sum] : sums) {
    CAPTURE(path);
    CHECK(sha256(path) == sum);
  }

  // The rebuilt shards are right, not just present: with two more servers gone, every ec(4,2)
  // chunk needs all four survivors, rebuilt ones among them, and replica(3) its last copy.
  int killedMore = 0;
  for (int i = 0; i < cluster.chunks() && killedMore < 2; ++i) {
    if (i == victim) continue;
    cluster.stopChunk(i, SIGKILL);
    ++killedMore;
  }
  cluster.unmount();
  cluster.mount();
  for (auto& [path, sum] : sums) {
    CAPTURE(path);
    CHECK(sha256(path) == sum);
  }
  CHECK(cluster.logProblems().empty());
}

namespace {

std::string shardFile(const std::string& chunkDir, uint64_t chunk, int shard) {
  char name[64];
  snprintf(name, sizeof name, "/shards/%02x/%016llx.%d", unsigned(chunk & 0xff),
           (unsigned long long)chunk, shard);
  return chunkDir + name;
}

// Index of the chunk server (in the Cluster) registered as `id`.
int serverIndex(Cluster& cluster, uint64_t id) {
  for (int i = 0; i < cluster.chunks(); ++i) {
    if (serverIdOf(cluster.chunkDir(i)) == id) return i;
  }
  FAIL("no chunk server has id " << id);
  return -1;
}

}  // namespace

TEST_CASE("repair: inventories — a shard gone from a live server is rebuilt, an orphan deleted") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options options;
  options.chunks = 7;
  options.chunkArgs = {"--inventory-interval", "1s"};
  options.metaArgs = {"--repair-grace", "3s"};
  Cluster cluster(options);
  REQUIRE(cluster.waitChunksUp(7));
  uint64_t seed = testSeed(43);
  std::mt19937_64 rng(seed);
  std::string path = cluster.mnt() + "/file";
  writeAll(path, randomBytes(rng, 3'000'017));
  std::string sum = sha256(path);
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  int leader = cluster.leader();
  REQUIRE(leader >= 0);
  auto chunks = chunksOf(cluster.metaAddress(leader), st.st_ino);
  REQUIRE(chunks.size() == 1);
  ChunkDesc c = chunks[0];
  REQUIRE(c.servers.size() == 6);

  // Shard 1's file vanishes from its (running) server; a copy of shard 2 appears on the one
  // server that holds nothing of the chunk: an orphan.
  int lostOn = serverIndex(cluster, c.servers[1].value);
  std::string lost = shardFile(cluster.chunkDir(lostOn), c.id.value, 1);
  REQUIRE(access(lost.c_str(), F_OK) == 0);
  int spare = -1;
  for (int i = 0; i < cluster.chunks(); ++i) {
    uint64_t id = serverIdOf(cluster.chunkDir(i));
    if (std::find(c.servers.begin(), c.servers.end(), ServerId(id)) == c.servers.end()) spare = i;
  }
  REQUIRE(spare >= 0);
  std::string orphan = shardFile(cluster.chunkDir(spare), c.id.value, 2);
  REQUIRE(run({"/bin/cp", shardFile(cluster.chunkDir(serverIndex(cluster, c.servers[2].value)),
                                    c.id.value, 2),
               orphan})
              .exitCode == 0);
  REQUIRE(unlink(lost.c_str()) == 0);

  // The orphan goes, and shard 1 is rebuilt on a server that held nothing of the chunk.
  double deadline = nowSeconds() + 120;
  bool orphanGone = false, moved = false;
  while (nowSeconds() < deadline && !(orphanGone && moved)) {
    orphanGone = access(orphan.c_str(), F_OK) != 0;
    auto now = chunksOf(cluster.metaAddress(cluster.leader()), st.st_ino);
    moved = now.size() == 1 && now[0].servers[1] != c.servers[1];
    if (moved) c = now[0];
    usleep(200'000);
  }
  CHECK(orphanGone);
  REQUIRE(moved);
  auto after = fsck(cluster);
  INFO(after.output);
  CHECK(after.exitCode == 0);
  // Every other shard stayed where it was, and the data reads back from the shards.
  for (int i = 0; i < 6; ++i) {
    if (i == 1) continue;
    CHECK(access(shardFile(cluster.chunkDir(serverIndex(cluster, c.servers[i].value)), c.id.value,
                           i)
                      .c_str(),
                  F_OK) == 0);
  }
  cluster.unmount();
  cluster.mount();
  CHECK(sha256(path) == sum);
  CHECK(cluster.logProblems().empty());
}

TEST_CASE("repair: drain moves every shard off a live server while it is read — then remove") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options options;
  options.chunks = 7;
  Cluster cluster(options);
  REQUIRE(cluster.waitChunksUp(7));
  uint64_t seed = testSeed(47);
  std::mt19937_64 rng(seed);
  std::string rep = cluster.mnt() + "/rep";
  REQUIRE(mkdir(rep.c_str(), 0755) == 0);
  REQUIRE(run({adminBin(), "policy", "set", rep, "replica(3)"}).exitCode == 0);
  std::map<std::string, std::string> files = {
      {cluster.mnt() + "/a", randomBytes(rng, 9'000'017)},
      {cluster.mnt() + "/b", randomBytes(rng, 300'000)},
      {rep + "/c", randomBytes(rng, 5'000'000)}};
  for (auto& [path, data] : files) writeAll(path, data);

  int leader = cluster.leader();
  REQUIRE(leader >= 0);
  std::map<uint64_t, int> shardsOn;
  std::map<std::string, uint64_t> inodes;
  for (auto& [path, data] : files) {
    struct stat st;
    REQUIRE(stat(path.c_str(), &st) == 0);
    inodes[path] = st.st_ino;
    for (auto& c : chunksOf(cluster.metaAddress(leader), st.st_ino)) {
      for (ServerId s : c.servers) ++shardsOn[s.value];
    }
  }
  uint64_t victim = 0;
  for (auto& [id, n] : shardsOn) {
    if (n > shardsOn[victim]) victim = id;
  }
  REQUIRE(victim != 0);
  std::string id = std::to_string(victim);
  auto refused = run({adminBin(), "--meta", cluster.meta(), "remove", id});
  INFO(refused.output);
  CHECK(refused.exitCode != 0);
  CHECK(refused.output.find("drain it first") != std::string::npos);

  // A reader goes over every file again and again while the shards move.
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0}, wrong{0}, errors{0};
  std::thread reader([&] {
    while (!stop) {
      for (auto& [path, data] : files) {
        try {
          if (readAll(path) != data) ++wrong;
        } catch (...) {
          ++errors;
        }
        ++reads;
      }
    }
  });
  auto drained = run({adminBin(), "--meta", cluster.meta(), "--timeout", "120s", "drain", id,
                      "--wait"},
                     180'000);
  stop = true;
  reader.join();
  INFO(drained.output);
  REQUIRE(drained.exitCode == 0);
  MESSAGE("drained server " << victim << " (" << shardsOn[victim] << " shards) with "
                            << reads.load() << " whole-file reads meanwhile");
  CHECK(wrong == 0);
  CHECK(errors == 0);
  CHECK(run({adminBin(), "--meta", cluster.meta(), "status"}).output.find("drain") !=
        std::string::npos);

  leader = cluster.leader();
  for (auto& [path, inode] : inodes) {
    for (auto& c : chunksOf(cluster.metaAddress(leader), inode)) {
      CAPTURE(path);
      for (ServerId s : c.servers) CHECK(s.value != victim);
    }
  }
  // Its old copies are deleted through the garbage list; then it may go.
  double deadline = nowSeconds() + 60;
  RunResult removed;
  while (nowSeconds() < deadline) {
    removed = run({adminBin(), "--meta", cluster.meta(), "remove", id});
    if (removed.exitCode == 0) break;
    usleep(250'000);
  }
  INFO(removed.output);
  CHECK(removed.exitCode == 0);
  cluster.stopChunk(serverIndex(cluster, victim), SIGKILL);
  cluster.unmount();
  cluster.mount();
  for (auto& [path, data] : files) {
    CAPTURE(path);
    CHECK((readAll(path) == data));
  }
  CHECK(fsck(cluster).exitCode == 0);
}
