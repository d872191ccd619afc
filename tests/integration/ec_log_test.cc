// The write log of small ec writes (DESIGN.md rule 2) with real processes: writes that are
// acknowledged but not yet applied to the stripes are read by every mount — also by one that
// must rebuild a lost shard — and the records a killed writer left are applied to the stripes
// by the next writer, after which the parity agrees with them.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <regex>

#include "tests/integration/helpers.h"

using namespace tessera::test;

TEST_CASE("ec log: unapplied small writes are read everywhere, a killed writer's are applied by the next") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options o;  // ec(4,2) on 6 servers
  o.metaArgs = {"--lease-timeout", "2s"};
  Cluster cluster(o);
  REQUIRE(cluster.waitChunksUp(6));
  std::mt19937_64 rng(testSeed(31337));
  const size_t kSize = 4 << 20;
  std::string model = randomBytes(rng, kSize);
  writeAll(cluster.mnt() + "/image", model);  // large writes: straight to the stripes

  // Mount A logs small writes and (for an hour) does not apply them.
  int logged = 0;
  {
    ExtraMount a(cluster, "mnt-a", "", {"--ec-log-apply-delay", "1h"});
    int fd = open((a.path + "/image").c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    for (int i = 0; i < 60; ++i) {
      size_t n = 1 + rng() % 8000;
      size_t at = rng() % (kSize - n);
      std::string bytes = randomBytes(rng, n);
      REQUIRE(pwrite(fd, bytes.data(), n, off_t(at)) == ssize_t(n));
      model.replace(at, n, bytes);
      if (i % 10 == 9) REQUIRE(fdatasync(fd) == 0);
      ++logged;
    }
    // Another mount reads them while they are only in the logs.
    {
      ExtraMount c(cluster, "mnt-c");
      CHECK((readAll(c.path + "/image") == model));
    }
    // A dies without applying them (the file is still open: nothing drained them).
    a.process.signal(SIGKILL);
    a.process.wait(5'000);
    close(fd);
  }
  MESSAGE(logged << " small writes logged by A before it was killed");

  // With A gone, every reader still sees them — also one that rebuilds whichever shard the
  // stopped server held from the other shards and the records the others keep.
  for (int down = 0; down < 6; ++down) {
    CAPTURE(down);
    cluster.stopChunk(down, SIGKILL);
    {
      ExtraMount r(cluster, "mnt-r");
      CHECK((readAll(r.path + "/image") == model));
    }
    cluster.startChunk(down);
    REQUIRE(cluster.waitChunksUp(6));
  }

  // The next writer takes the lease over, applies A's records to the stripes, then writes.
  {
    int fd = open((cluster.mnt() + "/image").c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    REQUIRE(pwrite(fd, "B", 1, 777) == 1);
    model[777] = 'B';
    REQUIRE(fsync(fd) == 0);
    close(fd);
  }
  std::string log = readAll(cluster.dir() + "/mount.log");
  CHECK(log.find("write-log records its last writer left") != std::string::npos);

  // The stripes now hold every write: readers that must decode two lost shards of every row
  // from parity read the model.
  {
    ExtraMount c(cluster, "mnt-c");
    CHECK((readAll(c.path + "/image") == model));
  }
  cluster.stopChunk(0, SIGKILL);
  cluster.stopChunk(1, SIGKILL);
  ExtraMount d(cluster, "mnt-d");
  CHECK((readAll(d.path + "/image") == model));
}

namespace {

// The id the chunk server with data directory `dir` registered under (DIR/server.id).
uint64_t registeredId(const std::string& dir) {
  std::string text = readAll(dir + "/server.id");
  std::smatch m;
  REQUIRE(std::regex_search(text, m, std::regex("id = ([0-9]+)")));
  return std::stoull(m[1]);
}

}  // namespace

TEST_CASE("ec log: a dead writer's records go with a data shard that repair rebuilds elsewhere") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options o;  // ec(4,2) on 7 servers: a lost one's shards have somewhere to go
  o.chunks = 7;
  o.serverTimeout = "2s";
  o.metaArgs = {"--lease-timeout", "2s", "--repair-grace", "2s", "--session-timeout", "3s"};
  Cluster cluster(o);
  REQUIRE(cluster.waitChunksUp(7));
  std::mt19937_64 rng(testSeed(4711));
  const size_t kSize = 4 << 20;  // one chunk
  std::string model = randomBytes(rng, kSize);
  std::string path = cluster.mnt() + "/image";
  writeAll(path, model);

  // The server of data shard 0, whose blocks the small writes below all land in.
  auto placed = run({adminBin(), "--meta", cluster.meta(), "chunks", path});
  REQUIRE_MESSAGE(placed.exitCode == 0, placed.output);
  std::smatch m;
  REQUIRE(std::regex_search(placed.output, m, std::regex("\n0 +[0-9]+ +ec\\(4,2\\) +([0-9]+) ")));
  uint64_t shard0 = std::stoull(m[1]);
  int victim = -1;
  for (int i = 0; i < cluster.chunks(); ++i) {
    if (registeredId(cluster.chunkDir(i)) == shard0) victim = i;
  }
  REQUIRE(victim >= 0);

  // A logs small writes into the first cell of every stripe (data shard 0) and dies.
  {
    ExtraMount a(cluster, "mnt-a", "", {"--ec-log-apply-delay", "1h", "--keepalive", "1s"});
    int fd = open((a.path + "/image").c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    for (int i = 0; i < 40; ++i) {
      size_t n = 1 + rng() % 6000;
      size_t at = (rng() % (kSize / (256 << 10))) * (256 << 10) + rng() % ((64 << 10) - n);
      std::string bytes = randomBytes(rng, n);
      REQUIRE(pwrite(fd, bytes.data(), n, off_t(at)) == ssize_t(n));
      model.replace(at, n, bytes);
    }
    REQUIRE(fdatasync(fd) == 0);
    a.process.signal(SIGKILL);
    a.process.wait(5'000);
    close(fd);
  }

  // Shard 0's server goes for good; once its session is gone and the grace passed, repair
  // rebuilds shard 0 elsewhere. The rebuilt copy must carry A's records: reads of shard 0 go
  // to it.
  cluster.stopChunk(victim, SIGKILL);
  // Done when fsck is clean and says a shard was rebuilt (the lost server may be noticed,
  // waited for and rebuilt between two polls).
  bool clean = false;
  std::string last;
  std::smatch done;
  for (int i = 0; i < 600 && !clean; ++i) {  // bounded: 60 s
    auto f = run({adminBin(), "--meta", cluster.meta(), "--timeout", "5s", "fsck"}, 30'000);
    last = f.output;
    clean = f.exitCode == 0 && std::regex_search(last, done, std::regex("([0-9]+) done")) &&
            std::stoull(done[1]) > 0;
    if (!clean) usleep(100'000);
  }
  INFO(last);
  REQUIRE(clean);
  // The rebuilt shard's server took the records (its log says so).
  bool took = false;
  for (int i = 0; i < cluster.chunks(); ++i) {
    if (i == victim) continue;
    took = took || readAll(cluster.dir() + "/chunk" + std::to_string(i) + ".log")
                           .find("write-log records of the rebuilt chunk") != std::string::npos;
  }
  CHECK(took);
  {
    ExtraMount r(cluster, "mnt-r");
    CHECK((readAll(r.path + "/image") == model));
  }

  // The next writer applies them; then the stripes alone hold every write.
  {
    int fd = open(path.c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    REQUIRE(pwrite(fd, "C", 1, 99) == 1);
    model[99] = 'C';
    REQUIRE(fsync(fd) == 0);
    close(fd);
  }
  CHECK(readAll(cluster.dir() + "/mount.log").find("write-log records its last writer left") !=
        std::string::npos);
  ExtraMount d(cluster, "mnt-d");
  CHECK((readAll(d.path + "/image") == model));
}

// A chunk this mount placed itself is "fresh": a direct write takes the blocks the mount never
// wrote there for zeros instead of reading them. Logged writes count as written: a large write
// that begins or ends inside a block a small write logged keeps the small write's bytes on its
// other side. (Found by data_test under load, when a reopen kept the chunk fresh.)
TEST_CASE("ec log: a large write next to a logged small one on a fresh chunk keeps its bytes") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  std::mt19937_64 rng(testSeed(4242));
  std::vector<std::string> models;
  for (int i = 0; i < 6; ++i) {
    CAPTURE(i);
    std::string path = cluster.mnt() + "/f" + std::to_string(i);
    int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
    REQUIRE(fd >= 0);
    std::string model;
    auto put = [&](uint64_t at, uint64_t n) {
      std::string bytes = randomBytes(rng, n);
      REQUIRE(pwrite(fd, bytes.data(), n, off_t(at)) == ssize_t(n));
      if (model.size() < at + n) model.resize(at + n, '\0');
      model.replace(at, n, bytes);
    };
    put(0, 1 + rng() % 4096);  // places the chunk and creates its shards
    // A small write (logged), then a large one (direct) that starts inside its last block or
    // ends inside its first one.
    uint64_t at = (i % 2 ? 2 << 20 : 65536) + rng() % 200'000, n = 1000 + rng() % 60'000;
    put(at, n);
    uint64_t big = (1 << 20) + rng() % 100'000;
    if (i % 2 == 0) {
      put(at + n - 1 - rng() % std::min<uint64_t>(n - 1, 4000), big);
    } else {
      put(at + 1 + rng() % std::min<uint64_t>(n - 1, 4000) - big, big);
    }
    REQUIRE(fsync(fd) == 0);
    REQUIRE(close(fd) == 0);
    CHECK((readAll(path) == model));
    models.push_back(std::move(model));
  }
  // And through a mount with cold caches.
  ExtraMount r(cluster, "mnt-r");
  for (int i = 0; i < 6; ++i) {
    CAPTURE(i);
    CHECK((readAll(r.path + "/f" + std::to_string(i)) == models[i]));
  }
}
