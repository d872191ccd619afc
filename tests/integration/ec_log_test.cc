// The write log of small ec writes (DESIGN.md rule 2) with real processes: writes that are
// acknowledged but not yet applied to the stripes are read by every mount — also by one that
// must rebuild a lost shard — and the records a killed writer left are applied to the stripes
// by the next writer, after which the parity agrees with them.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

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
