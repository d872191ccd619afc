// The write log of small ec writes (DESIGN.md rule 2) with real processes: writes that are
// acknowledged but not yet applied to the stripes are read by every mount — also by one that
// must rebuild a lost shard — and the records a killed writer left are applied to the stripes
// by the next writer, after which the parity agrees with them.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <regex>
#include <set>
#include <sstream>
#include <variant>

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
  // Their records wait in the chunk servers' logs, and `tessera status` says so.
  CHECK(waitUntilMs(10'000, [&] {
    return cluster.status().find("write log: ") != std::string::npos;
  }));

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
  // Once applied, no server holds any: status no longer lists a write log.
  REQUIRE(cluster.waitLogsApplied());
  CHECK(cluster.status().find("write log: ") == std::string::npos);

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

// The index of the chunk server whose shard `shard` of the first chunk of `path` is.
int serverOfShard(Cluster& cluster, const std::string& path, int shard) {
  auto placed = run({adminBin(), "--meta", cluster.meta(), "chunks", path});
  REQUIRE_MESSAGE(placed.exitCode == 0, placed.output);
  std::smatch m;
  REQUIRE(std::regex_search(placed.output, m,
                            std::regex("\n0 +[0-9]+ +[a-z]+\\([0-9,]+\\) +([0-9 ]+)")));
  std::istringstream servers(m[1].str());
  uint64_t id = 0;
  for (int i = 0; i <= shard; ++i) REQUIRE(bool(servers >> id));
  for (int i = 0; i < cluster.chunks(); ++i) {
    if (registeredId(cluster.chunkDir(i)) == id) return i;
  }
  FAIL("no chunk server registered as " << id);
  return -1;
}

// Waits (bounded: 60 s) until fsck is clean and says a shard was rebuilt (the lost server may
// be noticed, waited for and rebuilt between two polls).
void waitRepaired(Cluster& cluster) {
  std::string last;
  bool clean = waitUntilMs(60'000, [&] {
    auto f = run({adminBin(), "--meta", cluster.meta(), "--timeout", "5s", "fsck"}, 30'000);
    last = f.output;
    std::smatch done;
    return f.exitCode == 0 && std::regex_search(last, done, std::regex("([0-9]+) done")) &&
           std::stoull(done[1]) > 0;
  });
  INFO(last);
  REQUIRE(clean);
}

// ec(4,2) on 7 servers, so that a lost one's shards have somewhere to go, with a dead server,
// mount and lease noticed within seconds and a 2 s repair grace.
Cluster::Options repairCluster() {
  Cluster::Options o;
  o.chunks = 7;
  o.serverTimeout = "2s";
  o.metaArgs = {"--lease-timeout", "2s", "--repair-grace", "2s", "--session-timeout", "3s"};
  return o;
}

// Logs 40 small writes into the first cell of every stripe of a 4 MiB file (data shard 0)
// (`file` on some mount), syncs them, and updates `model`.
void logSmallWritesToShard0(const std::string& file, std::string& model, std::mt19937_64& rng) {
  int fd = open(file.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  for (int i = 0; i < 40; ++i) {
    size_t n = 1 + rng() % 6000;
    size_t at = (rng() % (model.size() / (256 << 10))) * (256 << 10) + rng() % ((64 << 10) - n);
    std::string bytes = randomBytes(rng, n);
    REQUIRE(pwrite(fd, bytes.data(), n, off_t(at)) == ssize_t(n));
    model.replace(at, n, bytes);
  }
  REQUIRE(fdatasync(fd) == 0);
  close(fd);
}

// Mount A logs small writes into data shard 0 of `file` (acknowledged: in the logs) and exits
// as soon as its applier has written the parity of the first batch, before its data. Its apply
// delay is an hour, so the first apply is the one closing the file starts (a release drains
// the log): after every write was acknowledged, however slow the run. (With the usual 200 ms,
// a slow sanitizer run could start an apply, and exit, before fdatasync had returned.)
void killWriterAfterParity(Cluster& cluster, std::string& model, std::mt19937_64& rng) {
  ExtraMount a(cluster, "mnt-a", "",
               {"--keepalive", "1s", "--fault-exit-after-parity", "--ec-log-apply-delay", "1h"});
  logSmallWritesToShard0(a.path + "/image", model, rng);
  CHECK(a.process.wait(20'000) != -1);
  CHECK(readAll(a.log).find("exiting after an apply's parity") != std::string::npos);
}

// Whether the log of a chunk server other than `except` has `text`.
bool chunkLogSays(Cluster& cluster, int except, const std::string& text) {
  for (int i = 0; i < cluster.chunks(); ++i) {
    if (i == except) continue;
    std::string log = readAll(cluster.dir() + "/chunk" + std::to_string(i) + ".log");
    if (log.find(text) != std::string::npos) return true;
  }
  return false;
}

// A fresh mount reads /image as `model`.
void checkFreshMountReads(Cluster& cluster, const std::string& name, const std::string& model,
                          const std::string& file = "/image") {
  ExtraMount r(cluster, name);
  std::string got = readAll(r.path + file);
  CHECK_MESSAGE(got == model, difference(got, model));
}

// One synced byte through the cluster's mount: it takes the chunk's lease over.
void writeByte(const std::string& path, size_t at, char c, std::string& model) {
  int fd = open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  REQUIRE(pwrite(fd, &c, 1, off_t(at)) == 1);
  model[at] = c;
  REQUIRE(fsync(fd) == 0);
  close(fd);
}

}  // namespace

TEST_CASE("ec log: a dead writer's records go with a data shard that repair rebuilds elsewhere") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster(repairCluster());
  REQUIRE(cluster.waitChunksUp(7));
  std::mt19937_64 rng(testSeed(4711));
  const size_t kSize = 4 << 20;  // one chunk
  std::string model = randomBytes(rng, kSize);
  std::string path = cluster.mnt() + "/image";
  writeAll(path, model);

  // The server of data shard 0, whose blocks the small writes below all land in.
  int victim = serverOfShard(cluster, path, 0);

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
  waitRepaired(cluster);
  // The rebuilt shard's server took the records (its log says so).
  CHECK(chunkLogSays(cluster, victim, "write-log records of the rebuilt chunk"));
  checkFreshMountReads(cluster, "mnt-r", model);

  // The next writer applies them; then the stripes alone hold every write.
  writeByte(path, 99, 'C', model);
  CHECK(readAll(cluster.dir() + "/mount.log").find("write-log records its last writer left") !=
        std::string::npos);
  checkFreshMountReads(cluster, "mnt-d", model);
}

// The second fault of DESIGN.md rule 2: a writer dies in the middle of applying its log — the
// parity of a batch written, its data not — and the server of another data shard of those rows
// dies too (one host running both). The lost shard's blocks in those rows are in no record, and
// a plain decode from the half-applied rows would return garbage for them. Readers and the next
// writer decode them by agreement of the two parity blocks (fs/row_agreement.h) instead.
TEST_CASE("ec log: a writer killed between an apply's parity and its data, and a data shard lost too, lose no byte") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options o;  // ec(4,2) on 6 servers
  o.metaArgs = {"--lease-timeout", "2s", "--session-timeout", "3s"};
  Cluster cluster(o);
  REQUIRE(cluster.waitChunksUp(6));
  std::mt19937_64 rng(testSeed(2718));
  const size_t kSize = 4 << 20;  // one chunk, 16 stripes
  std::string model = randomBytes(rng, kSize);
  std::string path = cluster.mnt() + "/image";
  writeAll(path, model);

  // The servers of data shards 1 and 2: the small writes below touch neither.
  int shard1 = serverOfShard(cluster, path, 1), shard2 = serverOfShard(cluster, path, 2);

  // A logs small writes into data shard 0 and exits after its first apply's parity; shard
  // 1's server dies with it.
  killWriterAfterParity(cluster, model, rng);
  cluster.stopChunk(shard1, SIGKILL);
  checkFreshMountReads(cluster, "mnt-r", model);

  // The next writer takes over once A's lease lapsed: it decodes shard 1's blocks of the
  // half-applied rows by agreement, applies A's records, then writes.
  writeByte(path, 4321, 'D', model);
  CHECK(readAll(cluster.dir() + "/mount.log").find("decoded by agreement") != std::string::npos);

  // The stripes alone now hold every write, and agree with their parity: readers that must
  // decode shards 1 and 2 of every row read the model.
  cluster.stopChunk(shard2, SIGKILL);
  checkFreshMountReads(cluster, "mnt-d", model);
}

// The same half-applied rows, but nobody writes the file again: repair rebuilds the lost data
// shard elsewhere, and the rows the dead writer's records touch must be decoded by agreement of
// the parity there too, or the rebuilt shard keeps garbage for good.
TEST_CASE("ec log: repair rebuilds a data shard of rows a killed writer left half applied") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster(repairCluster());
  REQUIRE(cluster.waitChunksUp(7));
  std::mt19937_64 rng(testSeed(1618));
  std::string model = randomBytes(rng, 4 << 20);
  std::string path = cluster.mnt() + "/image";
  writeAll(path, model);
  int shard1 = serverOfShard(cluster, path, 1);
  killWriterAfterParity(cluster, model, rng);
  cluster.stopChunk(shard1, SIGKILL);
  waitRepaired(cluster);
  CHECK(chunkLogSays(cluster, shard1, "by agreement of the parity"));
  // Reads of shard 1 now go to the rebuilt copy: no decode.
  checkFreshMountReads(cluster, "mnt-r", model);
  // The next writer applies the records; the stripes then agree with their parity.
  writeByte(path, 1234, 'R', model);
  cluster.stopChunk(serverOfShard(cluster, path, 0), SIGKILL);
  cluster.stopChunk(serverOfShard(cluster, path, 2), SIGKILL);
  checkFreshMountReads(cluster, "mnt-d", model);
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

// The applier sorts a live writer's records by row before cutting them into batches (fewer CRC
// pages written per batch), unless two records of one shard overlap: then the newer must land
// last, and the order stays as written. Both, over many batches (an apply batch holds 32
// records of 4 KiB): the stripes hold the newest bytes and agree with their parity.
TEST_CASE("ec log: a live writer's records land in row order, overlapping ones in write order") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  REQUIRE(cluster.waitChunksUp(6));
  std::mt19937_64 rng(testSeed(777));
  const size_t kSize = 4 << 20;
  std::string models[2];
  for (bool overlapping : {false, true}) {
    CAPTURE(overlapping);
    std::string path = cluster.mnt() + (overlapping ? "/overlapping" : "/descending");
    std::string& model = models[overlapping];
    model = randomBytes(rng, kSize);
    writeAll(path, model);  // large writes: straight to the stripes
    {
      // Nothing applied until the file is closed: then every record goes in one apply.
      ExtraMount a(cluster, "mnt-a", "", {"--ec-log-apply-delay", "1h"});
      int fd = open((a.path + (overlapping ? "/overlapping" : "/descending")).c_str(), O_RDWR);
      REQUIRE(fd >= 0);
      for (int i = 0; i < 200; ++i) {
        // Descending: whole blocks from the end down, none twice. Overlapping: a few blocks
        // of one region, again and again, unaligned.
        size_t n = overlapping ? 1 + rng() % 6000 : 4096;
        size_t at = overlapping ? (1 << 20) + rng() % 40'000 : kSize - 4096 * size_t(3 * i + 1);
        std::string bytes = randomBytes(rng, n);
        REQUIRE(pwrite(fd, bytes.data(), n, off_t(at)) == ssize_t(n));
        model.replace(at, n, bytes);
      }
      REQUIRE(fdatasync(fd) == 0);
      REQUIRE(close(fd) == 0);
      // The close applies them all and gives the lease back (only then: this write waits).
      writeByte(path, 7, 'W', model);
    }
    checkFreshMountReads(cluster, "mnt-r", model, overlapping ? "/overlapping" : "/descending");
  }
  // A applied its records itself: none were left to the next writer.
  CHECK(readAll(cluster.dir() + "/mount.log").find("records its last writer left") ==
        std::string::npos);
  // The parity: readers that decode two lost data shards of every row from it.
  std::string d = cluster.mnt() + "/descending";
  cluster.stopChunk(serverOfShard(cluster, d, 0), SIGKILL);
  cluster.stopChunk(serverOfShard(cluster, d, 3), SIGKILL);
  checkFreshMountReads(cluster, "mnt-d", models[0], "/descending");
  checkFreshMountReads(cluster, "mnt-e", models[1], "/overlapping");
}

namespace {

// Reads `file` of a fresh mount 64 KiB cell by cell, with O_DIRECT. The cells of data shard 1
// in stripes `tornStripes` must fail with EIO; every other cell must read as `model`.
void checkCellsRead(Cluster& cluster, const std::string& name, const std::string& model,
                    const std::set<size_t>& tornStripes) {
  const size_t kCell = 64 << 10, kStripe = 4 * kCell;
  ExtraMount r(cluster, name);
  int fd = open((r.path + "/image").c_str(), O_RDONLY | O_DIRECT);
  REQUIRE(fd >= 0);
  void* buf = aligned_alloc(4096, kCell);
  REQUIRE(buf != nullptr);
  int eio = 0;
  for (size_t at = 0; at < model.size(); at += kCell) {
    size_t stripe = at / kStripe, shard = at % kStripe / kCell;
    bool torn = shard == 1 && tornStripes.count(stripe) > 0;
    CAPTURE(at);
    ssize_t n = pread(fd, buf, kCell, off_t(at));
    if (torn) {
      CHECK(n == -1);
      CHECK(errno == EIO);
      eio += n == -1;
    } else {
      REQUIRE(n == ssize_t(kCell));
      std::string got(static_cast<const char*>(buf), kCell);
      CHECK_MESSAGE(got == model.substr(at, kCell), difference(got, model.substr(at, kCell)));
    }
  }
  free(buf);
  close(fd);
  CHECK(eio == int(tornStripes.size()));
}

}  // namespace

namespace {

// Mount A writes stripes 4 to 7 of `path` (4 MiB, ec(4,2), holding `model`) anew, whole, and
// exits once their data blocks are written, before their parity; then the server of data shard
// 1 is killed. Returns the file as its data shards now hold it (shard 1's cells included).
std::string tearLargeWrite(Cluster& cluster, const std::string& path, const std::string& model,
                           std::mt19937_64& rng) {
  const size_t kStripe = 256 << 10, at = 4 * kStripe, len = 4 * kStripe;
  int shard1 = serverOfShard(cluster, path, 1);
  std::string torn = model;
  torn.replace(at, len, randomBytes(rng, len));
  {
    ExtraMount a(cluster, "mnt-a", "", {"--keepalive", "1s", "--fault-exit-after-data"});
    int fd = open((a.path + "/image").c_str(), O_RDWR | O_DIRECT);
    REQUIRE(fd >= 0);
    void* buf = aligned_alloc(4096, len);
    REQUIRE(buf != nullptr);
    memcpy(buf, torn.data() + at, len);
    CHECK(pwrite(fd, buf, len, off_t(at)) != ssize_t(len));  // never acknowledged
    free(buf);
    close(fd);
    CHECK(a.process.wait(20'000) != -1);
    CHECK(readAll(a.log).find("exiting after a large write's data") != std::string::npos);
  }
  cluster.stopChunk(shard1, SIGKILL);
  return torn;
}

}  // namespace

// A writer dies between a large write's data blocks and its parity, and the server of a data
// shard of those rows is lost too. Decoding that shard's blocks there mixes the new data of
// the others with the old parity: bytes nobody wrote. A reader finds the mix against the
// second parity block and answers EIO; the next writer's re-sync leaves those rows as they
// are (parity encoded over the garbage would make it read as valid data); every other byte
// reads back.
TEST_CASE("ec log: a large write torn between data and parity, with a data shard lost too, reads EIO there, never garbage") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options o;  // ec(4,2) on 6 servers: the lost shard has nowhere else to go
  o.metaArgs = {"--lease-timeout", "2s", "--session-timeout", "3s"};
  Cluster cluster(o);
  REQUIRE(cluster.waitChunksUp(6));
  std::mt19937_64 rng(testSeed(5150));
  std::string model = randomBytes(rng, 4 << 20);
  std::string path = cluster.mnt() + "/image";
  writeAll(path, model);
  std::string torn = tearLargeWrite(cluster, path, model, rng);
  // Data shards 0, 2 and 3 of stripes 4-7 hold the new bytes; shard 1's cells there are EIO.
  checkCellsRead(cluster, "mnt-r", torn, {4, 5, 6, 7});

  // The next writer takes the lease over and re-syncs the chunk: the torn rows stay as they are.
  writeByte(path, 100, 'N', torn);
  CHECK(readAll(cluster.dir() + "/mount.log").find("re-sync leaves") != std::string::npos);
  checkCellsRead(cluster, "mnt-s", torn, {4, 5, 6, 7});
}

// The same torn rows, and repair rebuilds the lost data shard elsewhere: its blocks there are
// marked lost (their content is known nowhere), not stored as the garbage they decode to, so
// reads keep answering EIO for them; a write of those stripes makes them whole again.
TEST_CASE("ec log: repair marks the blocks of a torn large write's rows lost, and a rewrite heals them") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster(repairCluster());
  REQUIRE(cluster.waitChunksUp(7));
  std::mt19937_64 rng(testSeed(6160));
  std::string model = randomBytes(rng, 4 << 20);
  std::string path = cluster.mnt() + "/image";
  writeAll(path, model);
  int shard1 = serverOfShard(cluster, path, 1);
  std::string torn = tearLargeWrite(cluster, path, model, rng);
  // Repaired, and fsck says so, but exits 2: blocks are lost.
  std::string last;
  bool reported = waitUntilMs(60'000, [&] {
    auto f = run({adminBin(), "--meta", cluster.meta(), "--timeout", "5s", "fsck"}, 30'000);
    last = f.output;
    return f.exitCode == 2 && last.find(" 0 degraded, 0 lost") != std::string::npos &&
           last.find("64 blocks marked lost") != std::string::npos;
  });
  INFO(last);
  REQUIRE(reported);
  // fsck names the chunk and the shard.
  CHECK(std::regex_search(last, std::regex("\n2 +0 +1 +ec\\(4,2\\) +lost-blocks +64 blocks "
                                           "marked lost on shard 1\n")));
  CHECK(last.find("in 1 chunks") != std::string::npos);
  CHECK(chunkLogSays(cluster, shard1, "marked lost, not stored as data"));
  checkCellsRead(cluster, "mnt-r", torn, {4, 5, 6, 7});
  // With a parity shard's server down as well, a decode of those blocks would have no parity
  // to spare to tell the mix: shard 1's server says they are lost, and reads fail all the same.
  int parity = serverOfShard(cluster, path, 5);
  cluster.stopChunk(parity, SIGKILL);
  checkCellsRead(cluster, "mnt-p", torn, {4, 5, 6, 7});
  cluster.startChunk(parity);
  REQUIRE(cluster.waitChunksUp(6));

  // The next writer re-syncs (shard 1's lost blocks read as damaged: the rows stay), then
  // writes stripes 4 to 7 whole: every cell reads back.
  writeByte(path, 100, 'N', torn);
  const size_t at = 1 << 20, len = 1 << 20;
  std::string rewrite = randomBytes(rng, len);
  int fd = open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  pwriteAll(fd, rewrite, off_t(at));
  REQUIRE(fsync(fd) == 0);
  close(fd);
  torn.replace(at, len, rewrite);
  checkCellsRead(cluster, "mnt-s", torn, {});

  // The next scrub pass finds no lost block any more: fsck is clean.
  auto asked = run({adminBin(), "--meta", cluster.meta(), "scrub", "--now"}, 30'000);
  REQUIRE(asked.exitCode == 0);
  bool clean = waitUntilMs(60'000, [&] {
    auto f = run({adminBin(), "--meta", cluster.meta(), "--timeout", "5s", "fsck"}, 30'000);
    last = f.output;
    return f.exitCode == 0;
  });
  INFO(last);
  CHECK(clean);
}

namespace {

// Waits (bounded: 60 s) until fsck says no chunk is degraded or lost and `blocks` blocks are
// marked lost, and exits 2.
void waitLostBlocks(Cluster& cluster, int blocks) {
  std::string last;
  bool reported = waitUntilMs(60'000, [&] {
    auto f = run({adminBin(), "--meta", cluster.meta(), "--timeout", "5s", "fsck"}, 30'000);
    last = f.output;
    return f.exitCode == 2 && last.find(" 0 degraded, 0 lost") != std::string::npos &&
           last.find(std::to_string(blocks) + " blocks marked lost") != std::string::npos;
  });
  INFO(last);
  REQUIRE(reported);
}

// Reads `len` bytes at `at` of `file` with O_DIRECT: the bytes, or the errno of a failed read.
std::variant<std::string, int> readDirect(const std::string& file, size_t at, size_t len) {
  int fd = open(file.c_str(), O_RDONLY | O_DIRECT);
  REQUIRE(fd >= 0);
  void* buf = aligned_alloc(4096, len);
  REQUIRE(buf != nullptr);
  ssize_t n = pread(fd, buf, len, off_t(at));
  int err = errno;
  std::string got(static_cast<const char*>(buf), n > 0 ? size_t(n) : 0);
  free(buf);
  close(fd);
  if (n < 0) return err;
  return got;
}

}  // namespace

// The same torn rows, repaired: data shard 1's blocks there are marked lost. A small write
// into one of those rows (to data shard 0) is logged and acknowledged; its apply cannot know
// the lost block, so it encodes the row's parity over the pattern the lost block holds. The
// write is then in the stripes with full redundancy, the log drains, and other writers go on
// (before, the apply failed for good: every later writer of the chunk got EIO). A larger
// write's read-modify-write does the same, but refuses to write part of a lost block. A decode
// of the lost block gives the pattern, which readers and repair treat as lost, never as data.
TEST_CASE("ec log: writes into rows holding a lost block land with their parity, and the block stays lost") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options o = repairCluster();
  o.chunks = 8;  // room for shard 1 to be rebuilt twice
  Cluster cluster(o);
  REQUIRE(cluster.waitChunksUp(8));
  std::mt19937_64 rng(testSeed(7170));
  std::string model = randomBytes(rng, 4 << 20);
  std::string path = cluster.mnt() + "/image";
  writeAll(path, model);
  std::string torn = tearLargeWrite(cluster, path, model, rng);
  waitLostBlocks(cluster, 64);

  // Block 1 of stripe 5's cell on data shard 0; the lost block of its row is on data shard 1.
  const size_t kStripe = 256 << 10, kCell = 64 << 10, kBlock = 4096;
  const size_t at = 5 * kStripe + kBlock, lostAt = at + kCell;
  std::string small = randomBytes(rng, kBlock);
  int fd = open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  pwriteAll(fd, small, off_t(at));
  REQUIRE(fsync(fd) == 0);
  torn.replace(at, small.size(), small);
  // A write of stripe 5's last two cells and stripe 6's first two goes straight to the stripes:
  // stripe 5's parity is encoded over its lost block too; stripe 6's is written whole.
  std::string direct = randomBytes(rng, kStripe);
  pwriteAll(fd, direct, off_t(5 * kStripe + 2 * kCell));
  REQUIRE(fsync(fd) == 0);
  close(fd);
  torn.replace(5 * kStripe + 2 * kCell, direct.size(), direct);
  {
    // A write that covers a lost block in part cannot know the rest of it: EIO, nothing written.
    int d = open(path.c_str(), O_RDWR | O_DIRECT);
    REQUIRE(d >= 0);
    void* buf = aligned_alloc(4096, kStripe);
    REQUIRE(buf != nullptr);
    memset(buf, 'P', kStripe);
    CHECK(pwrite(d, buf, kStripe, off_t(7 * kStripe + kCell + 512)) == -1);
    CHECK(errno == EIO);
    free(buf);
    close(d);
  }
  {
    // Another writer of the chunk takes its lease over: the log drained.
    ExtraMount w(cluster, "mnt-w");
    writeByte(w.path + "/image", 100, 'W', torn);
  }
  checkCellsRead(cluster, "mnt-r", torn, {4, 5, 7});

  // Shard 1's server is lost again: its block in the row of the small write decodes to the
  // pattern, which reads as EIO, and repair marks it lost again (the 48 blocks of stripes 4, 5
  // and 7).
  cluster.stopChunk(serverOfShard(cluster, path, 1), SIGKILL);
  {
    ExtraMount r(cluster, "mnt-t");
    auto got = readDirect(r.path + "/image", lostAt, kBlock);
    REQUIRE(std::holds_alternative<int>(got));
    CHECK(std::get<int>(got) == EIO);
  }
  waitLostBlocks(cluster, 48);
  checkCellsRead(cluster, "mnt-s", torn, {4, 5, 7});

  // The row's parity holds the small write: with shard 0's server lost too, it decodes.
  cluster.stopChunk(serverOfShard(cluster, path, 0), SIGKILL);
  ExtraMount r(cluster, "mnt-u");
  auto got = readDirect(r.path + "/image", at, kBlock);
  REQUIRE(std::holds_alternative<std::string>(got));
  CHECK(std::get<std::string>(got) == small);
  auto lost = readDirect(r.path + "/image", lostAt, kBlock);
  REQUIRE(std::holds_alternative<int>(lost));
  CHECK(std::get<int>(lost) == EIO);
}

// Chunk servers whose logs hold little (--log-memory 1M) refuse appends while full. A writer
// waits and asks such a server again as its applies make room, instead of putting the record on
// other servers and marking its data shard stale (or failing the write once every server
// refused): no shard goes stale, no write fails, every byte reads back.
TEST_CASE("ec log: a chunk server whose log is full makes writers wait, not mark shards stale") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options o;
  o.chunkArgs = {"--log-memory", "1M"};
  Cluster cluster(o);
  REQUIRE(cluster.waitChunksUp(6));
  std::mt19937_64 rng(testSeed(8180));
  const size_t kStripe = 256 << 10, kLen = 60 << 10, kWrites = 100;
  std::string model = randomBytes(rng, kWrites * kStripe);
  std::string path = cluster.mnt() + "/image";
  writeAll(path, model);
  {
    // 60 KiB O_DIRECT writes into data shard 0's cell of one stripe after another: logged, each
    // record to shard 0's server and both parity servers, whose logs are full after 17 records
    // (1 MiB) until the mount applies them (1 s after the first). Had all three refused for
    // good, the record would land on the other data servers and miss shard 0. The rows of one
    // write are no other write's: the apply of the earlier records never waits for the rows
    // of a write that waits for room.
    ExtraMount w(cluster, "mnt-w", "", {"--ec-log-apply-delay", "1s"});
    int fd = open((w.path + "/image").c_str(), O_RDWR | O_DIRECT);
    REQUIRE(fd >= 0);
    void* buf = aligned_alloc(4096, kLen);
    REQUIRE(buf != nullptr);
    int failed = 0;
    for (size_t i = 0; i < kWrites; ++i) {
      size_t at = i * kStripe + 4096;
      std::string data = randomBytes(rng, kLen);
      memcpy(buf, data.data(), kLen);
      if (pwrite(fd, buf, kLen, off_t(at)) != ssize_t(kLen)) {
        ++failed;
        continue;
      }
      model.replace(at, kLen, data);
    }
    free(buf);
    CHECK(failed == 0);
    REQUIRE(fsync(fd) == 0);
    close(fd);
    // The servers' logs did fill (else this test saw nothing), and no record missed its shard.
    CHECK(chunkLogSays(cluster, -1, "chunk log full"));
    CHECK(readAll(w.log).find("log record missed shard") == std::string::npos);
  }
  auto f = run({adminBin(), "--meta", cluster.meta(), "--timeout", "5s", "fsck"}, 30'000);
  INFO(f.output);
  CHECK(f.exitCode == 0);
  checkFreshMountReads(cluster, "mnt-r", model);
}
