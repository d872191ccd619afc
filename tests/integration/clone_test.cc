// Copy-on-write clones on a real mount (issue 5, item 5): `tessera clone` and copy_file_range
// share whole chunks between files without copying data; the first write to a shared chunk
// gives the writing file a private copy (each chunk server copies its own shard), so the other
// file keeps its content; chunks stay alive until the last file lets go of them.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>

#include <kj/common.h>

#include "fs/clone_ioctl.h"
#include "tests/integration/helpers.h"

using namespace tessera::test;

namespace {

constexpr off_t M = 1 << 20;
constexpr off_t kChunk = 64 * M;

// `tessera chunks FILE`: index → chunk id.
std::map<uint64_t, uint64_t> chunksOf(Cluster& cluster, const std::string& path) {
  auto r = run({adminBin(), "--meta", cluster.meta(), "chunks", path}, 30'000);
  INFO(r.output);
  REQUIRE(r.exitCode == 0);
  std::map<uint64_t, uint64_t> rows;
  std::istringstream in(r.output);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream cols(line);
    uint64_t index = 0, id = 0;
    if (cols >> index >> id) rows[index] = id;
  }
  return rows;
}

// Writes `data` at `off` and fsyncs.
void pwriteAt(const std::string& path, const std::string& data, off_t off) {
  int fd = open(path.c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  pwriteAll(fd, data, off);
  REQUIRE(fsync(fd) == 0);
  REQUIRE(close(fd) == 0);
}

// A sparse image of `chunks` chunks: kData bytes of random data at the start of each, holes
// elsewhere. model[i] is chunk i's data.
constexpr size_t kData = 8 * M;

void checkImage(const std::string& path, const std::vector<std::string>& model) {
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK(st.st_size == off_t(model.size()) * kChunk);
  for (size_t i = 0; i < model.size(); ++i) {
    CAPTURE(i);
    CHECK(difference(preadAt(path, off_t(i) * kChunk, kData), model[i]) == "");
    // And a hole stays a hole.
    CHECK(difference(preadAt(path, off_t(i) * kChunk + 32 * M, 4096), std::string(4096, '\0')) ==
          "");
  }
}

uint64_t msSince(std::chrono::steady_clock::time_point t) {
  return uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - t)
                      .count());
}

}  // namespace

TEST_CASE(
    "clone: a 1 GiB image cloned shares its chunks, each copy keeps its own writes, and the "
    "clone outlives its source") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;  // ec(4,2)
  std::mt19937_64 rng(testSeed(4711));
  const size_t chunks = 16;  // 1 GiB
  std::string src = cluster.mnt() + "/base.img";
  std::string dst = cluster.mnt() + "/vm1.img";
  std::vector<std::string> model;
  {
    int fd = open(src.c_str(), O_RDWR | O_CREAT, 0640);
    REQUIRE(fd >= 0);
    for (size_t i = 0; i < chunks; ++i) {
      model.push_back(randomBytes(rng, kData));
      REQUIRE(pwrite(fd, model[i].data(), kData, off_t(i) * kChunk) == ssize_t(kData));
    }
    REQUIRE(ftruncate(fd, off_t(chunks) * kChunk) == 0);
    REQUIRE(fsync(fd) == 0);
    REQUIRE(close(fd) == 0);
  }
  uint64_t before = chunkServersDiskUsed(cluster);

  auto t = std::chrono::steady_clock::now();
  auto r = run({adminBin(), "clone", src, dst}, 120'000);
  {
    INFO(r.output);
    REQUIRE(r.exitCode == 0);
  }
  MESSAGE("tessera clone of a 1 GiB image (" << chunks << " chunks with data) took " << msSince(t)
                                             << " ms: " << r.output);
  // Shared, not copied: the same chunk ids, and no shard data written.
  auto srcChunks = chunksOf(cluster, src);
  auto dstChunks = chunksOf(cluster, dst);
  CHECK(srcChunks.size() == chunks);
  CHECK(dstChunks == srcChunks);
  uint64_t afterClone = chunkServersDiskUsed(cluster);
  MESSAGE("chunk servers' disk use: " << before / M << " MiB before the clone, " << afterClone / M
                                      << " MiB after");
  CHECK(afterClone < before + 2 * M);
  struct stat st;
  REQUIRE(stat(dst.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0640);
  // du of each: the MiBs written into its chunks, 8 of each chunk's 64.
  CHECK(uint64_t(st.st_blocks) * 512 == chunks * kData);
  REQUIRE(stat(src.c_str(), &st) == 0);
  CHECK(uint64_t(st.st_blocks) * 512 == chunks * kData);
  checkImage(dst, model);

  // Each copy writes: the source into chunk 2, the clone into chunks 2 and 5.
  std::vector<std::string> srcModel = model, dstModel = model;
  std::string a = randomBytes(rng, M), b = randomBytes(rng, M), c = randomBytes(rng, 4096);
  t = std::chrono::steady_clock::now();
  pwriteAt(src, a, 2 * kChunk + M);
  MESSAGE("first write to a shared chunk (copy-on-write of the chunk) and fsync took "
          << msSince(t) << " ms");
  srcModel[2].replace(M, M, a);
  pwriteAt(dst, b, 2 * kChunk + 3 * M);
  dstModel[2].replace(3 * M, M, b);
  pwriteAt(dst, c, 5 * kChunk + 4096);
  dstModel[5].replace(4096, 4096, c);
  checkImage(src, srcModel);
  checkImage(dst, dstModel);
  auto srcAfter = chunksOf(cluster, src);
  auto dstAfter = chunksOf(cluster, dst);
  for (uint64_t i = 0; i < chunks; ++i) {
    CAPTURE(i);
    if (i == 2 || i == 5) {
      CHECK(srcAfter[i] != dstAfter[i]);
    } else {
      CHECK(srcAfter[i] == dstAfter[i]);
    }
  }
  // Space grows by the chunks copied (two: the source's chunk 2 and the clone's chunk 5; the
  // clone's chunk 2 was its own once the source had let go of it), not by the image.
  uint64_t afterWrites = chunkServersDiskUsed(cluster);
  uint64_t chunkOnDisk = kData / 4 * 6;  // ec(4,2): the data and half as much parity
  MESSAGE("disk use after the writes: " << afterWrites / M << " MiB (a chunk's shards take "
                                        << chunkOnDisk / M << " MiB)");
  CHECK(afterWrites < afterClone + 3 * chunkOnDisk + 8 * M);

  // The source goes; the clone keeps every chunk, also once the garbage is collected.
  REQUIRE(unlink(src.c_str()) == 0);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  uint64_t used = chunkServersDiskUsed(cluster);
  // The source's private chunk 2 is garbage: its shards go within a few heartbeats.
  while (used + chunkOnDisk / 2 > afterWrites && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    used = chunkServersDiskUsed(cluster);
  }
  MESSAGE("disk use once the source was deleted: " << used / M << " MiB");
  CHECK(used + chunkOnDisk / 2 <= afterWrites);
  cluster.unmount();
  cluster.mount();
  checkImage(dst, dstModel);
}

TEST_CASE(
    "clone: copy_file_range shares whole aligned chunks and copies unaligned bytes, with "
    "exact content") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  std::mt19937_64 rng(testSeed(99));
  std::string src = cluster.mnt() + "/src";
  std::string model = randomBytes(rng, size_t(2 * kChunk + 5 * M + 123));
  writeAll(src, model);

  // Unaligned: a plain copy of the bytes into the middle of an existing file.
  std::string dst = cluster.mnt() + "/dst";
  std::string dstModel = randomBytes(rng, size_t(300'000));
  writeAll(dst, dstModel);
  int in = open(src.c_str(), O_RDONLY);
  int out = open(dst.c_str(), O_RDWR);
  REQUIRE(in >= 0);
  REQUIRE(out >= 0);
  loff_t offIn = 5000, offOut = 7000;
  size_t left = 200'000;
  while (left > 0) {
    ssize_t n = copy_file_range(in, &offIn, out, &offOut, left, 0);
    REQUIRE(n > 0);
    left -= size_t(n);
  }
  REQUIRE(close(out) == 0);
  dstModel.replace(7000, 200'000, model.substr(5000, 200'000));
  CHECK(difference(readAll(dst), dstModel) == "");

  // Aligned, the whole file: every chunk shared, the last (partial) one too.
  std::string whole = cluster.mnt() + "/whole";
  out = open(whole.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(out >= 0);
  offIn = 0;
  offOut = 0;
  left = model.size();
  while (left > 0) {
    ssize_t n = copy_file_range(in, &offIn, out, &offOut, left, 0);
    REQUIRE(n > 0);
    left -= size_t(n);
  }
  REQUIRE(close(out) == 0);
  REQUIRE(close(in) == 0);
  CHECK(chunksOf(cluster, whole) == chunksOf(cluster, src));
  CHECK(difference(readAll(whole), model) == "");

  // cp (coreutils 9) copies with copy_file_range: whole chunks are shared.
  std::string copied = cluster.mnt() + "/copied";
  auto cp = run({"/bin/cp", src, copied}, 60'000);
  {
    INFO(cp.output);
    REQUIRE(cp.exitCode == 0);
  }
  CHECK(chunksOf(cluster, copied) == chunksOf(cluster, src));
  CHECK(difference(readAll(copied), model) == "");

  // Shrinking the clone into its shared last chunk zeroes that chunk's tail in the clone's
  // own copy; the source keeps its bytes.
  REQUIRE(truncate(whole.c_str(), 2 * kChunk + M) == 0);
  REQUIRE(truncate(whole.c_str(), off_t(model.size())) == 0);
  std::string wholeModel = model;
  std::fill(wholeModel.begin() + 2 * kChunk + M, wholeModel.end(), '\0');
  CHECK(difference(readAll(whole), wholeModel) == "");
  CHECK(difference(readAll(src), model) == "");
}

TEST_CASE(
    "clone: a file another mount keeps writing is cloned as of its last fsync, and later "
    "writes go to the source only") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  ExtraMount writer(cluster, "writer");
  std::mt19937_64 rng(testSeed(1234));
  std::string name = "/disk.img";
  std::string first = randomBytes(rng, 4 * M), second = randomBytes(rng, 4 * M);
  // The writer keeps the image open and its write leases (a running VM).
  int fd = open((writer.path + name).c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(pwrite(fd, first.data(), first.size(), 0) == ssize_t(first.size()));
  REQUIRE(fdatasync(fd) == 0);

  auto t = std::chrono::steady_clock::now();
  auto r = run({adminBin(), "clone", cluster.mnt() + name, cluster.mnt() + "/snap.img"}, 120'000);
  {
    INFO(r.output);
    REQUIRE(r.exitCode == 0);
  }
  MESSAGE("clone while another mount held the write lease took " << msSince(t) << " ms");
  CHECK(difference(readAll(cluster.mnt() + "/snap.img"), first) == "");

  // The writer goes on: its next write copies the chunk first.
  REQUIRE(pwrite(fd, second.data(), second.size(), 0) == ssize_t(second.size()));
  REQUIRE(fdatasync(fd) == 0);
  REQUIRE(close(fd) == 0);
  CHECK(difference(readAll(cluster.mnt() + name), second) == "");
  CHECK(difference(readAll(cluster.mnt() + "/snap.img"), first) == "");
}

TEST_CASE("clone: tessera clone refuses an existing destination and a directory") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  writeAll(cluster.mnt() + "/a", "hello");
  writeAll(cluster.mnt() + "/b", "world");
  auto r = run({adminBin(), "clone", cluster.mnt() + "/a", cluster.mnt() + "/b"}, 30'000);
  CHECK(r.exitCode != 0);
  CHECK(r.output.find("exists") != std::string::npos);
  CHECK(readAll(cluster.mnt() + "/b") == "world");
  r = run({adminBin(), "clone", cluster.mnt() + "/a", cluster.mnt() + "/b", "--force"}, 30'000);
  CHECK(r.exitCode == 0);
  CHECK(readAll(cluster.mnt() + "/b") == "hello");
  REQUIRE(mkdir((cluster.mnt() + "/d").c_str(), 0755) == 0);
  r = run({adminBin(), "clone", cluster.mnt() + "/d", cluster.mnt() + "/e"}, 30'000);
  CHECK(r.exitCode != 0);
  CHECK(r.output.find("not a regular file") != std::string::npos);
}

TEST_CASE(
    "clone: a file whose writer was killed -9 mid-stream is cloned after its chunk is re-synced, "
    "and the clone keeps what was synced") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options o;
  o.metaArgs = {"--lease-timeout", "2s"};
  Cluster cluster(o);
  REQUIRE(cluster.waitChunksUp(6));
  std::mt19937_64 rng(testSeed(2024));
  const size_t kSize = 4 * M;
  std::string synced = randomBytes(rng, kSize);
  {
    ExtraMount writer(cluster, "writer");
    int fd = open((writer.path + "/disk.img").c_str(), O_RDWR | O_CREAT, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(pwrite(fd, synced.data(), kSize, 0) == ssize_t(kSize));
    REQUIRE(fdatasync(fd) == 0);
    // Small unsynced writes, some of them in flight at the kill.
    for (int i = 0; i < 200; ++i) {
      std::string piece = randomBytes(rng, 4096);
      off_t at = off_t(rng() % (kSize / 4096)) * 4096;
      REQUIRE(pwrite(fd, piece.data(), piece.size(), at) == ssize_t(piece.size()));
    }
    writer.process.signal(SIGKILL);
    writer.process.wait(5'000);
    close(fd);
  }
  auto t = std::chrono::steady_clock::now();
  auto r = run({adminBin(), "clone", cluster.mnt() + "/disk.img", cluster.mnt() + "/copy.img"},
               120'000);
  {
    INFO(r.output);
    REQUIRE(r.exitCode == 0);
  }
  MESSAGE("clone after the writer's kill took " << msSince(t) << " ms");
  // The clone is exactly the source as it stood after the re-sync.
  std::string source = readAll(cluster.mnt() + "/disk.img");
  std::string copy = readAll(cluster.mnt() + "/copy.img");
  CHECK(difference(copy, source) == "");
  REQUIRE(source.size() == kSize);
  // Write the source: the clone keeps its content.
  std::string fresh = randomBytes(rng, 4096);
  pwriteAt(cluster.mnt() + "/disk.img", fresh, 0);
  CHECK(difference(readAll(cluster.mnt() + "/copy.img"), copy) == "");
}

// A running VM's image is cloned while it is written: the clone must be the image at one
// moment, however far apart the chunks are. The writer (on another mount) stamps a generation
// into chunk 0, then into a chunk 9 GiB further — past what one copy_file_range call covers
// (under 4 GiB), so `tessera clone` must use the mount's whole-file clone (fs/clone_ioctl.h) —
// each write O_DIRECT and acknowledged before the next. At every moment the first stamp equals
// the second or is one ahead, and so must the clone's. (A clone piece by piece passed this
// too when tried: the writer's next write waits for its copy of the first piece's chunk while
// the other pieces go. That it is one point in time is by construction: one meta operation.)
TEST_CASE("clone: a file written on another mount is cloned at one point in time, however large") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  ExtraMount writer(cluster, "writer");
  const off_t kFar = 9LL << 30;
  std::string src = writer.path + "/vm.img";
  int fd = open(src.c_str(), O_RDWR | O_CREAT | O_DIRECT, 0644);
  REQUIRE(fd >= 0);
  void* mem = nullptr;
  REQUIRE(posix_memalign(&mem, 4096, 4096) == 0);
  auto* block = static_cast<char*>(mem);
  auto stamp = [&](uint64_t g, off_t at) {
    memset(block, 0, 4096);
    memcpy(block, &g, sizeof g);
    return pwrite(fd, block, 4096, at) == 4096;
  };
  REQUIRE(stamp(0, 0));
  REQUIRE(stamp(0, kFar));
  // The size is the meta server's once flushed (as QEMU flushes); the stamps below stay within.
  REQUIRE(fdatasync(fd) == 0);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> generation{0};
  std::atomic<int> writeErrno{0};
  std::thread vm([&] {
    for (uint64_t g = 1; !stop; ++g) {
      if (!stamp(g, 0) || !stamp(g, kFar)) {
        writeErrno = errno;
        return;
      }
      generation = g;
    }
  });
  // Stopped and joined however the test ends.
  auto joinVm = kj::defer([&] {
    stop = true;
    if (vm.joinable()) vm.join();
  });
  auto stampOf = [](const std::string& path, off_t at) {
    std::string b = preadAt(path, at, 8);
    uint64_t g = UINT64_MAX;
    if (b.size() == 8) memcpy(&g, b.data(), 8);
    return g;
  };
  REQUIRE(waitUntilMs(30'000, [&] { return generation >= 5 || writeErrno != 0; }));
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    std::string copy = cluster.mnt() + "/clone" + std::to_string(i) + ".img";
    uint64_t before = generation;
    auto t = std::chrono::steady_clock::now();
    auto r = run({adminBin(), "clone", cluster.mnt() + "/vm.img", copy}, 120'000);
    INFO(r.output);
    REQUIRE(r.exitCode == 0);
    uint64_t near = stampOf(copy, 0), far = stampOf(copy, kFar);
    MESSAGE("clone " << i << " of a 9 GiB image being written took " << msSince(t)
                     << " ms; it holds generation " << near << " / " << far
                     << " (the writer was at " << before << " when it started, "
                     << generation.load() << " after)");
    CHECK((near == far || near == far + 1));
    CHECK(near >= before);
    struct stat st;
    REQUIRE(stat(copy.c_str(), &st) == 0);
    CHECK(st.st_size == kFar + 4096);
  }
  // The writer was held back only while each clone waited for its leases.
  uint64_t atEnd = generation;
  CHECK(waitUntilMs(30'000, [&] { return generation > atEnd + 3 || writeErrno != 0; }));
  stop = true;
  vm.join();
  CHECK(writeErrno == 0);
  free(mem);
  REQUIRE(close(fd) == 0);
}

TEST_CASE("clone: the whole-file clone calls refuse what they must") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  std::string src = cluster.mnt() + "/src", dst = cluster.mnt() + "/dst";
  writeAll(src, std::string(8192, 's'));
  writeAll(dst, "");
  int in = open(src.c_str(), O_RDONLY);
  int inW = open(src.c_str(), O_WRONLY);
  int out = open(dst.c_str(), O_WRONLY);
  int outR = open(dst.c_str(), O_RDONLY);
  REQUIRE((in >= 0 && inW >= 0 && out >= 0 && outR >= 0));
  uint64_t token = 0;
  // A token only for a reader of the source.
  CHECK(ioctl(inW, TESSERA_IOC_CLONE_TOKEN, &token) == -1);
  CHECK(errno == EBADF);
  REQUIRE(ioctl(in, TESSERA_IOC_CLONE_TOKEN, &token) == 0);
  // A clone only into a writer of the destination, with a token the mount gave, once.
  TesseraCloneFrom from{token, 0};
  CHECK(ioctl(outR, TESSERA_IOC_CLONE_FROM, &from) == -1);
  CHECK(errno == EBADF);
  TesseraCloneFrom forged{token ^ 1, 0};
  CHECK(ioctl(out, TESSERA_IOC_CLONE_FROM, &forged) == -1);
  CHECK(errno == EINVAL);
  TesseraCloneFrom flagged{token, 1};
  CHECK(ioctl(out, TESSERA_IOC_CLONE_FROM, &flagged) == -1);
  CHECK(errno == EINVAL);
  REQUIRE(ioctl(out, TESSERA_IOC_CLONE_FROM, &from) == 0);
  CHECK(readAll(dst) == std::string(8192, 's'));
  CHECK(ioctl(out, TESSERA_IOC_CLONE_FROM, &from) == -1);  // used up
  CHECK(errno == EINVAL);
  // Not onto a file that holds something, nor onto the source itself.
  REQUIRE(ioctl(in, TESSERA_IOC_CLONE_TOKEN, &token) == 0);
  from.token = token;
  CHECK(ioctl(out, TESSERA_IOC_CLONE_FROM, &from) == -1);
  CHECK(errno == EINVAL);
  REQUIRE(ioctl(in, TESSERA_IOC_CLONE_TOKEN, &token) == 0);
  from.token = token;
  CHECK(ioctl(inW, TESSERA_IOC_CLONE_FROM, &from) == -1);
  CHECK(errno == EINVAL);
  CHECK(readAll(src) == std::string(8192, 's'));
  // Any other ioctl is not the mount's: isatty(3) still says no.
  CHECK(isatty(in) == 0);
  CHECK(errno == ENOTTY);
  for (int fd : {in, inW, out, outR}) CHECK(close(fd) == 0);
}

// ec(3,2): a shard holds 342 cells (the chunk's last row is partial), not 64 MiB / 3 bytes —
// which is not whole blocks, and every chunk server refused the copy of such a shard.
TEST_CASE("clone: the clone of an ec(3,2) file takes writes (its chunk is copied)") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  std::string dir = cluster.mnt() + "/ec32";
  REQUIRE(mkdir(dir.c_str(), 0755) == 0);
  REQUIRE(run({adminBin(), "policy", "set", dir, "ec(3,2)"}).exitCode == 0);
  std::mt19937_64 rng(testSeed(3232));
  std::string data = randomBytes(rng, 3 * M), patch = randomBytes(rng, 4096);
  writeAll(dir + "/src", data);
  auto r = run({adminBin(), "clone", dir + "/src", dir + "/copy"}, 60'000);
  INFO(r.output);
  REQUIRE(r.exitCode == 0);
  pwriteAt(dir + "/copy", patch, M);
  std::string want = data;
  want.replace(M, patch.size(), patch);
  CHECK(difference(readAll(dir + "/copy"), want) == "");
  CHECK(difference(readAll(dir + "/src"), data) == "");
}
