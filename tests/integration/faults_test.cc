// Faults with real processes and real bytes: chunk servers killed with SIGKILL, shard files
// damaged on disk, every daemon and the mount restarted.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>
#include <thread>

#include "tests/integration/helpers.h"

using namespace tessera::test;
namespace stdfs = std::filesystem;

namespace {

// A few files of different shapes; returns name → content.
std::map<std::string, std::string> writeSampleFiles(const std::string& dir, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::map<std::string, std::string> files;
  for (auto [name, size] : std::vector<std::pair<std::string, size_t>>{
           {"tiny", 5}, {"block", 4096}, {"odd", 100'003}, {"stripe", 262'144},
           {"multi", 3'000'017}, {"two-chunks", 70u << 20}}) {
    files[name] = randomBytes(rng, size);
    writeAll(dir + "/" + name, files[name]);
  }
  return files;
}

void checkFiles(const std::string& dir, const std::map<std::string, std::string>& files) {
  for (auto& [name, content] : files) {
    CAPTURE(name);
    std::string got = readAll(dir + "/" + name);
    CHECK(got.size() == content.size());
    CHECK((got == content));
  }
}

double nowSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

// Flips one byte in the data area of every shard file under `dir` (past the 68 KiB header and
// checksum table) at `offset`, if the file is that long.
int damageShards(const std::string& dir, uint64_t offset) {
  int damaged = 0;
  for (auto& e : stdfs::recursive_directory_iterator(dir + "/shards")) {
    if (!e.is_regular_file()) continue;
    int fd = open(e.path().c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    off_t at = off_t(69632 + offset);
    unsigned char b;
    if (pread(fd, &b, 1, at) == 1) {
      b ^= 0x5a;
      REQUIRE(pwrite(fd, &b, 1, at) == 1);
      ++damaged;
    }
    close(fd);
  }
  return damaged;
}

}  // namespace

TEST_CASE("faults: with two chunk servers killed every file reads back — a third gives EIO") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  uint64_t seed = testSeed(7);
  std::string ec = cluster.mnt() + "/ec";
  std::string rep = cluster.mnt() + "/rep";
  REQUIRE(mkdir(ec.c_str(), 0755) == 0);
  REQUIRE(mkdir(rep.c_str(), 0755) == 0);
  REQUIRE(run({adminBin(), "policy", "set", rep, "replica(3)"}).exitCode == 0);
  auto ecFiles = writeSampleFiles(ec, seed);
  auto repFiles = writeSampleFiles(rep, seed + 1);
  std::mt19937_64 rng(seed);
  int first = int(rng() % 6), second = (first + 1 + int(rng() % 5)) % 6;
  MESSAGE("killing chunk servers " << first << " and " << second);
  cluster.stopChunk(first, SIGKILL);
  cluster.stopChunk(second, SIGKILL);
  cluster.unmount();  // no page cache: every byte comes from the surviving servers
  cluster.mount();
  checkFiles(ec, ecFiles);
  checkFiles(rep, repFiles);

  int third = (second + 1) % 6 == first ? (second + 2) % 6 : (second + 1) % 6;
  cluster.stopChunk(third, SIGKILL);
  cluster.unmount();
  cluster.mount();
  double start = nowSeconds();
  CHECK(readErrno(ec + "/two-chunks") == EIO);
  CHECK(readErrno(ec + "/stripe") == EIO);
  double took = nowSeconds() - start;
  MESSAGE("EIO with three of six servers down came after " << took << " s");
  CHECK(took < 60);  // bounded by the io timeout, never a hang

  for (int i : {first, second, third}) cluster.startChunk(i);
  REQUIRE(cluster.waitChunksUp(6));
  checkFiles(ec, ecFiles);
  checkFiles(rep, repFiles);
}

TEST_CASE("faults: bytes flipped in shard files on disk never reach the reader") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  uint64_t seed = testSeed(11);
  std::string ec = cluster.mnt() + "/ec";
  std::string rep = cluster.mnt() + "/rep";
  REQUIRE(mkdir(ec.c_str(), 0755) == 0);
  REQUIRE(mkdir(rep.c_str(), 0755) == 0);
  REQUIRE(run({adminBin(), "policy", "set", rep, "replica(3)"}).exitCode == 0);
  auto ecFiles = writeSampleFiles(ec, seed);
  auto repFiles = writeSampleFiles(rep, seed + 1);
  cluster.unmount();
  // Damage two servers' copies of everything (at most m = 2 shards of any stripe, at most two
  // of three replicas) at several offsets, including the first block.
  int damaged = 0;
  for (int server : {1, 4}) {
    for (uint64_t off : {uint64_t(0), uint64_t(5000), uint64_t(70'000), uint64_t(1'000'000)}) {
      damaged += damageShards(cluster.chunkDir(server), off);
    }
  }
  MESSAGE("flipped " << damaged << " bytes in shard files");
  REQUIRE(damaged > 20);
  cluster.mount();
  checkFiles(ec, ecFiles);
  checkFiles(rep, repFiles);
}

TEST_CASE("faults: after every daemon and the mount restart, data and metadata are intact") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  const std::string m = cluster.mnt();
  REQUIRE(mkdir((m + "/dir").c_str(), 0750) == 0);
  auto files = writeSampleFiles(m + "/dir", testSeed(13));
  REQUIRE(symlink("dir/odd", (m + "/link").c_str()) == 0);
  REQUIRE(link((m + "/dir/tiny").c_str(), (m + "/hardlink").c_str()) == 0);
  REQUIRE(setxattr((m + "/dir").c_str(), "user.k", "v", 1, 0) == 0);
  REQUIRE(chmod((m + "/dir/block").c_str(), 0604) == 0);

  SUBCASE("stopped cleanly") {
    cluster.unmount();
    cluster.stopMeta(0);
    for (int i = 0; i < cluster.chunks(); ++i) cluster.stopChunk(i);
  }
  SUBCASE("killed with SIGKILL after fsync") {
    int fd = open((m + "/dir/multi").c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    REQUIRE(fsync(fd) == 0);
    close(fd);
    cluster.stopMeta(0, SIGKILL);
    for (int i = 0; i < cluster.chunks(); ++i) cluster.stopChunk(i, SIGKILL);
    cluster.unmount();
  }
  cluster.startMeta(0);
  for (int i = 0; i < cluster.chunks(); ++i) cluster.startChunk(i);
  REQUIRE(cluster.waitChunksUp(6));
  cluster.mount();
  checkFiles(m + "/dir", files);
  CHECK(readAll(m + "/link") == files["odd"]);
  CHECK(readAll(m + "/hardlink") == files["tiny"]);
  char v[4] = {};
  CHECK(getxattr((m + "/dir").c_str(), "user.k", v, sizeof v) == 1);
  struct stat st;
  REQUIRE(stat((m + "/dir/block").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0604);
  REQUIRE(stat((m + "/dir").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0750);
}

TEST_CASE("faults: the mount rides out a meta server killed and restarted mid-stream") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  const std::string d = cluster.mnt() + "/stream";
  REQUIRE(mkdir(d.c_str(), 0755) == 0);
  std::atomic<bool> stop{false};
  std::atomic<int> created{0};
  std::string failure;
  std::thread writer([&] {
    for (int i = 0; !stop && i < 100'000; ++i) {
      std::string name = d + "/f" + std::to_string(i);
      try {
        writeAll(name, "content of " + std::to_string(i));
        if (rename(name.c_str(), (name + ".done").c_str()) != 0) {
          failure = "rename " + name + ": " + strerror(errno);
          return;
        }
      } catch (const std::exception& e) {
        failure = e.what();
        return;
      }
      created = i + 1;
    }
  });
  auto waitCreated = [&](int n) {
    for (int t = 0; t < 3000 && created < n && failure.empty(); ++t) usleep(10'000);
  };
  waitCreated(50);
  cluster.stopMeta(0, SIGKILL);
  int before = created;
  usleep(300'000);  // the meta server stays away a while: operations wait, they do not fail
  cluster.startMeta(0);
  waitCreated(before + 50);
  stop = true;
  writer.join();
  REQUIRE_MESSAGE(failure.empty(), failure);
  MESSAGE(created.load() << " files created and renamed, " << before << " before the kill");
  CHECK(created > before);
  // Every operation that returned success is there once, with its content.
  int n = created;
  for (int i = 0; i < n; ++i) {
    std::string name = d + "/f" + std::to_string(i) + ".done";
    CHECK(readAll(name) == "content of " + std::to_string(i));
    CHECK(access((d + "/f" + std::to_string(i)).c_str(), F_OK) != 0);
  }
}
