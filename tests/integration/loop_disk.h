// tests/integration/loop_disk.h — small real disks for integration tests: an ext4 file system
// in an image file under the test's temp dir, loop-mounted, that can fill up (a filler file
// takes its room) or die (FS_IOC_SHUTDOWN makes the kernel answer every later read, write and
// open on it with EIO, as ext4 does when its device fails).
#pragma once
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <string>

#include "tests/integration/helpers.h"
#include "tests/support/process.h"

#ifndef FS_IOC_SHUTDOWN
#define FS_IOC_SHUTDOWN _IOR('X', 125, __u32)
#endif

namespace tessera::test {

constexpr uint32_t kShutdownNoLogFlush = 2;  // EXT4_GOING_FLAGS_NOLOGFLUSH

// A small ext4 file system in `image`, loop-mounted at `mountpoint` for the life of the object
// (the loop device goes with the last unmount: mount -o loop sets autoclear). The data
// directory of the chunk server is dir() inside it.
// Shard files in chunk-server data directory `dir` (half-created ones not counted).
inline int shardFiles(const std::string& dir) {
  int n = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir + "/shards")) {
    if (e.is_regular_file() && e.path().extension() != ".tmp") ++n;
  }
  return n;
}

class LoopDisk {
 public:
  LoopDisk(const std::string& image, const std::string& mountpoint, uint64_t bytes)
      : image_(image), mountpoint_(mountpoint) {
    auto fail = [&](const std::string& what, const RunResult& r) {
      throw std::runtime_error(what + ": " + r.output);
    };
    if (truncate(image.c_str(), 0) != 0 && errno != ENOENT) throw std::runtime_error("truncate");
    int fd = ::open(image.c_str(), O_CREAT | O_RDWR, 0644);
    if (fd < 0 || ftruncate(fd, off_t(bytes)) != 0) throw std::runtime_error("create " + image);
    ::close(fd);
    // -m 0: no blocks reserved for root, so the server sees the whole file system's room.
    auto mk = run({"/usr/sbin/mkfs.ext4", "-q", "-F", "-m", "0", image}, 60'000);
    if (mk.exitCode != 0) fail("mkfs.ext4 " + image, mk);
    mkdir(mountpoint.c_str(), 0755);
    auto m = run({"/usr/bin/mount", "-o", "loop", image, mountpoint}, 60'000);
    if (m.exitCode != 0) fail("mount -o loop " + image, m);
    mounted_ = true;
  }
  ~LoopDisk() {
    if (!mounted_) return;
    // The servers are gone by now (the Cluster goes first); a lazy unmount if anything lingers.
    if (run({"/usr/bin/umount", mountpoint_}, 30'000).exitCode != 0) {
      run({"/usr/bin/umount", "-l", mountpoint_}, 30'000);
    }
  }
  LoopDisk(const LoopDisk&) = delete;
  LoopDisk& operator=(const LoopDisk&) = delete;

  std::string dir() const { return mountpoint_ + "/data"; }
  const std::string& mountpoint() const { return mountpoint_; }

  // From now on every I/O on the file system fails with EIO, as after a dead device.
  void shutdown() {
    int fd = ::open(mountpoint_.c_str(), O_RDONLY | O_DIRECTORY);
    REQUIRE(fd >= 0);
    uint32_t flags = kShutdownNoLogFlush;
    int r = ioctl(fd, FS_IOC_SHUTDOWN, &flags);
    int err = errno;
    ::close(fd);
    REQUIRE_MESSAGE(r == 0, "FS_IOC_SHUTDOWN: " << strerror(err));
  }

  uint64_t freeBytes() const {
    struct statvfs v;
    REQUIRE(statvfs(mountpoint_.c_str(), &v) == 0);
    return uint64_t(v.f_bavail) * v.f_frsize;
  }

  // Space the file system has given out (to files and its own metadata).
  uint64_t usedBytes() const {
    struct statvfs v;
    REQUIRE(statvfs(mountpoint_.c_str(), &v) == 0);
    return uint64_t(v.f_blocks - v.f_bfree) * v.f_frsize;
  }

  // Shard files in the data directory.
  int shards() const { return shardFiles(dir()); }

 private:
  std::string image_, mountpoint_;
  bool mounted_ = false;
};

// Why loop-mounted ext4 file systems cannot be made here ("" when they can).
inline std::string loopDisksUnavailable(const std::string& tmp) {
  if (access("/usr/sbin/mkfs.ext4", X_OK) != 0) return "no /usr/sbin/mkfs.ext4 (e2fsprogs)";
  if (access("/usr/bin/mount", X_OK) != 0) return "no /usr/bin/mount";
  try {
    LoopDisk probe(tmp + "/probe.img", tmp + "/probe", 8 << 20);
  } catch (std::exception& e) {
    return std::string("cannot loop-mount an ext4 image: ") + e.what();
  }
  return "";
}

// The line of `tessera status` about the disk at `dir`, "" if it has none.
inline std::string diskLine(const std::string& status, const std::string& dir) {
  std::istringstream lines(status);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.find(" disk ") != std::string::npos && line.find(dir + " ") != std::string::npos) {
      return line;
    }
  }
  return "";
}

}  // namespace tessera::test
