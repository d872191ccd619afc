// A chunk server with several disks, and real faults on real disks: each disk is a small ext4
// file system in an image file, loop-mounted under the test's temp dir. A disk fills up (a
// filler file takes its room), or dies: FS_IOC_SHUTDOWN makes the kernel answer every later
// read, write and open on that file system with EIO — what ext4 does itself when its device
// fails (device-mapper, the usual way to fake a dead device, is not in this kernel). The server
// marks the disk full or failed, keeps serving its other disk, and `tessera status` says so;
// files stay readable and writable.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "tests/integration/helpers.h"
#include "tests/integration/loop_disk.h"
#include "tests/support/process.h"

using namespace tessera::test;
namespace stdfs = std::filesystem;

namespace {

// Seven chunk servers, server 0 on loop disks `a` and `b`: with every disk of server 0 gone,
// ec(4,2) chunks still find six. Placement weighs free space: capped, the others do not dwarf
// server 0's two small disks.
Cluster::Options onTwoLoopDisks(const LoopDisk& a, const LoopDisk& b) {
  Cluster::Options o;
  o.chunks = 7;
  o.chunkData[0] = {a.dir(), b.dir()};
  o.chunkArgs = {"--capacity", "120M"};
  return o;
}

// `count` files of 200 KB .. 1.5 MB under `prefix`, written through the mount.
std::map<std::string, std::string> writeFiles(Cluster& c, const std::string& prefix, int count,
                                              std::mt19937_64& rng) {
  std::map<std::string, std::string> files;
  for (int i = 0; i < count; ++i) {
    std::string name = prefix + std::to_string(i);
    files[name] = randomBytes(rng, 200'000 + rng() % 1'300'000);
    writeAll(c.mnt() + "/" + name, files[name]);
  }
  return files;
}

// Reads every file from the chunk servers (a fresh mount: nothing cached).
void checkFiles(Cluster& c, const std::map<std::string, std::string>& files) {
  c.unmount();
  c.mount();
  for (auto& [name, content] : files) {
    CAPTURE(name);
    std::string got = readAll(c.mnt() + "/" + name);
    CHECK(got.size() == content.size());
    CHECK((got == content));
  }
}

// `count` files of `size` bytes written through `mount` (large writes: straight to the
// stripes), then `writes` small writes into each, fdatasync'ed, through descriptors left open in
// `fds` (a mount that does not apply its log soon keeps them in the logs).
void writeThenLog(const std::string& mount, const std::string& prefix, int count, size_t size,
                  int writes, std::mt19937_64& rng, std::map<std::string, std::string>& files,
                  std::vector<int>& fds) {
  for (int i = 0; i < count; ++i) {
    std::string name = prefix + std::to_string(i);
    std::string& model = files[name];
    model = randomBytes(rng, size);
    writeAll(mount + "/" + name, model);
    int fd = open((mount + "/" + name).c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    fds.push_back(fd);
    for (int k = 0; k < writes; ++k) {
      size_t n = 1 + rng() % 8000;
      size_t at = rng() % (model.size() - n);
      std::string bytes = randomBytes(rng, n);
      pwriteAll(fd, bytes, off_t(at));
      model.replace(at, n, bytes);
    }
    REQUIRE(fdatasync(fd) == 0);
  }
}

// Every file read back through a fresh mount called `name`.
void readBack(Cluster& c, const std::string& name, const std::map<std::string, std::string>& files) {
  ExtraMount r(c, name);
  for (auto& [file, model] : files) {
    CAPTURE(name);
    CAPTURE(file);
    CHECK(difference(readAll(r.path + "/" + file), model) == "");
  }
}

// Waits until `tessera status` lists disk `dir` as FAILED; the last status in `status`.
bool waitDiskFailed(Cluster& c, const std::string& dir, std::string& status) {
  return waitUntilMs(15'000, [&] {
    status = c.status();
    return diskLine(status, dir).find("FAILED") != std::string::npos;
  });
}

}  // namespace

TEST_CASE("disks: a chunk server whose disk fills up puts new shards on its other disk") {
  TESSERA_REQUIRE_FUSE();
  TempDir tmp("disks-full");
  if (std::string why = loopDisksUnavailable(tmp.path()); !why.empty()) {
    MESSAGE("skipped: " << why);
    return;
  }
  std::mt19937_64 rng(testSeed(41));
  LoopDisk a(tmp / "a.img", tmp / "a", 64 << 20);
  LoopDisk b(tmp / "b.img", tmp / "b", 64 << 20);
  Cluster::Options o;
  o.chunkData[0] = {a.dir(), b.dir()};
  o.chunkArgs = {"--disk-reserve", "8M"};
  Cluster c(o);

  auto files = writeFiles(c, "before", 8, rng);
  REQUIRE(a.shards() > 0);
  REQUIRE(b.shards() > 0);  // new shards spread over both

  // Something else fills disk b up to its last MiB.
  std::string filler = b.mountpoint() + "/filler";
  {
    int fd = ::open(filler.c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    uint64_t room = b.freeBytes();
    REQUIRE(room > (2 << 20));
    CHECK(fallocate(fd, 0, 0, off_t(room - (1 << 20))) == 0);
    ::close(fd);
  }
  std::string status;
  bool full = waitUntilMs(15'000, [&] {
    status = c.status();
    return diskLine(status, b.dir()).find("FULL") != std::string::npos;
  });
  INFO(status);
  REQUIRE(full);
  CHECK(diskLine(status, b.dir()).find("below the reserve") != std::string::npos);
  CHECK(diskLine(status, a.dir()).find(" ok ") != std::string::npos);

  int onA = a.shards(), onB = b.shards();
  auto more = writeFiles(c, "after", 8, rng);
  CHECK(b.shards() == onB);  // nothing new on the full disk
  CHECK(a.shards() > onA);   // the server still takes shards, on its other disk
  files.insert(more.begin(), more.end());
  checkFiles(c, files);

  // Room again: the disk takes shards again.
  REQUIRE(unlink(filler.c_str()) == 0);
  bool ok = waitUntilMs(15'000, [&] {
    status = c.status();
    return diskLine(status, b.dir()).find(" ok ") != std::string::npos;
  });
  INFO(status);
  CHECK(ok);
}

TEST_CASE("disks: a chunk server whose disk fails with EIO serves its other disk, files stay "
          "readable and writable") {
  TESSERA_REQUIRE_FUSE();
  TempDir tmp("disks-eio");
  if (std::string why = loopDisksUnavailable(tmp.path()); !why.empty()) {
    MESSAGE("skipped: " << why);
    return;
  }
  std::mt19937_64 rng(testSeed(43));
  LoopDisk a(tmp / "a.img", tmp / "a", 64 << 20);
  LoopDisk b(tmp / "b.img", tmp / "b", 64 << 20);
  Cluster c(onTwoLoopDisks(a, b));

  auto files = writeFiles(c, "before", 16, rng);
  INFO("shards on a: " << a.shards() << ", on b: " << b.shards() << "\n" << c.status());
  REQUIRE(a.shards() > 0);
  REQUIRE(b.shards() > 0);
  int onB = b.shards();

  a.shutdown();
  std::string status;
  bool failed = waitDiskFailed(c, a.dir(), status);
  {
    INFO(status);
    REQUIRE(failed);
    CHECK(diskLine(status, a.dir()).find("Input/output error") != std::string::npos);
    CHECK(diskLine(status, b.dir()).find(" ok ") != std::string::npos);
    CHECK(status.find("takes no new shards") == std::string::npos);
    CHECK(status.find("7 up, 0 down") != std::string::npos);
  }
  // Shards on the dead disk are read around.
  checkFiles(c, files);

  // New files: the server keeps taking shards, on the disk that works.
  auto more = writeFiles(c, "after-a", 16, rng);
  CHECK(b.shards() > onB);
  files.insert(more.begin(), more.end());
  checkFiles(c, files);

  // Its last disk dies too: the server takes no new shards, the others take them all.
  b.shutdown();
  bool none = waitUntilMs(15'000, [&] {
    status = c.status();
    return status.find("takes no new shards") != std::string::npos;
  });
  {
    INFO(status);
    REQUIRE(none);
    CHECK(diskLine(status, b.dir()).find("FAILED") != std::string::npos);
  }
  more = writeFiles(c, "after-b", 10, rng);
  files.insert(more.begin(), more.end());
  checkFiles(c, files);
  CHECK(c.chunkRunning(0));
}

// The write logs and lease epochs live on each disk with its chunks (chunk/disk_logs.h): a
// server whose first disk is dead at start — before, it kept every chunk's records and fences
// there and could not start without it — comes up and serves its other disk. Small writes still
// in the logs (their mount applies nothing for an hour, and keeps the files open) read back,
// also with one more server down.

TEST_CASE("disks: a chunk server whose first disk is dead starts and serves its other disk, and "
          "logged writes read back") {
  TESSERA_REQUIRE_FUSE();
  TempDir tmp("disks-first-dead");
  std::mt19937_64 rng(testSeed(47));
  const std::string a = tmp / "a", b = tmp / "b";
  Cluster::Options o;
  o.chunks = 7;  // with server 0's first disk gone, ec(4,2) chunks still find six
  o.chunkData[0] = {a, b};
  Cluster c(o);

  std::map<std::string, std::string> files;
  std::vector<int> fds;
  ExtraMount w(c, "mnt-w", "", {"--ec-log-apply-delay", "1h"});
  writeThenLog(w.path, "f", 6, 2 << 20, 40, rng, files, fds);
  REQUIRE(stdfs::exists(a + "/log"));
  REQUIRE(stdfs::exists(b + "/log"));

  c.stopChunk(0, SIGKILL);
  stdfs::rename(a, a + ".dead");
  {
    std::ofstream dead(a);  // a file where the directory was: it cannot be opened
  }
  c.startChunk(0);
  REQUIRE(c.waitChunksUp(7));
  std::string status;
  bool seen = waitDiskFailed(c, a, status);
  INFO(status);
  REQUIRE(seen);
  CHECK(diskLine(status, b).find("FAILED") == std::string::npos);
  // Which shards the dead disk held is not known. A write that expects one of them here is
  // refused, never recreates it empty but for the write; new chunks' shards are created on b.
  CHECK(status.find("takes no new shards") == std::string::npos);
  const int shardsOnB = shardFiles(b);

  readBack(c, "mnt-r", files);
  c.stopChunk(1, SIGKILL);
  readBack(c, "mnt-r1", files);
  c.startChunk(1);
  REQUIRE(c.waitChunksUp(7));
  // The writer applies its records (on close), new files go to the other servers, and all read
  // back.
  for (int fd : fds) CHECK(close(fd) == 0);
  for (int i = 0; i < 8; ++i) {  // 8 chunks of 6 shards on 7 servers: some land on server 0
    std::string name = "after" + std::to_string(i);
    files[name] = randomBytes(rng, 1 << 20);
    writeAll(c.mnt() + "/" + name, files[name]);
  }
  CHECK(shardFiles(b) > shardsOnB);
  readBack(c, "mnt-r2", files);
}

namespace {

// The lines of `tessera status` about chunk server `id`: its own and the indented ones below it.
std::string serverBlock(const std::string& status, int id) {
  std::istringstream lines(status);
  std::string line, block;
  bool servers = false, in = false;  // past the "chunk servers:" heading; in the server's lines
  const std::string head = "  " + std::to_string(id) + " ";
  while (std::getline(lines, line)) {
    if (line.rfind("chunk servers:", 0) == 0) servers = true;
    if (servers && line.rfind(head, 0) == 0) {
      in = true;
    } else if (in && line.rfind("       ", 0) != 0) {
      break;
    }
    if (in) block += line + "\n";
  }
  return block;
}

}  // namespace

// A server's first disk dies while it runs (EIO): the write logs and fences of the chunks on its
// other disk are on that disk, so small writes to them go on through its log. Before, every
// chunk's log and fences were on the first disk, and every append to the server failed.
TEST_CASE("disks: when a server's first disk dies, small writes to chunks on its other disk still "
          "go through its write log") {
  TESSERA_REQUIRE_FUSE();
  TempDir tmp("disks-first-eio");
  if (std::string why = loopDisksUnavailable(tmp.path()); !why.empty()) {
    MESSAGE("skipped: " << why);
    return;
  }
  std::mt19937_64 rng(testSeed(53));
  LoopDisk a(tmp / "a.img", tmp / "a", 64 << 20);
  LoopDisk b(tmp / "b.img", tmp / "b", 64 << 20);
  Cluster c(onTwoLoopDisks(a, b));

  a.shutdown();
  std::string status;
  bool failed = waitDiskFailed(c, a.dir(), status);
  INFO(status);
  REQUIRE(failed);

  // New files (their shards on server 1 go to b), then small writes that their mount keeps in
  // the logs (it applies nothing for an hour, keeps its leases, and keeps the files open).
  ExtraMount w(c, "mnt-w", "", {"--ec-log-apply-delay", "1h", "--lease-idle", "0"});
  std::map<std::string, std::string> files;
  std::vector<int> fds;
  writeThenLog(w.path, "g", 8, 1 << 20, 20, rng, files, fds);
  CHECK(b.shards() > 0);
  // Every record reached its data shard's server (a miss is logged, and makes the shard stale).
  CHECK(readAll(w.log).find("missed shard") == std::string::npos);
  bool logged = waitUntilMs(10'000, [&] {
    status = c.status();
    return serverBlock(status, 1).find("write log: ") != std::string::npos;
  });
  INFO(status);
  CHECK(logged);
  readBack(c, "mnt-r", files);
  for (int fd : fds) CHECK(close(fd) == 0);
}
