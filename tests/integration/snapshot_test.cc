// `tessera snapshot` on a real mount: the copy keeps content byte for byte (holes included),
// modes, owners, times, xattrs, symlinks, hard links and special files while the original goes
// on changing; every write into it fails with EROFS; list and remove work; bad names are refused.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "tests/integration/helpers.h"

using namespace tessera::test;

namespace {

constexpr off_t M = 1 << 20;
constexpr off_t kChunk = 64 * M;

// 0, or the errno of a call that returned -1.
int err(long rc) { return rc < 0 ? errno : 0; }

// The errno of an open (closing what did open), 0 if it opened.
int openErr(const std::string& path, int flags) {
  int fd = open(path.c_str(), flags, 0644);
  if (fd < 0) return errno;
  close(fd);
  return 0;
}

struct stat lstatOf(const std::string& path) {
  struct stat st {};
  REQUIRE_MESSAGE(lstat(path.c_str(), &st) == 0, path << ": " << strerror(errno));
  return st;
}

std::string xattr(const std::string& path, const char* name) {
  char buf[256];
  ssize_t n = lgetxattr(path.c_str(), name, buf, sizeof buf);
  return n < 0 ? "errno " + std::to_string(errno) : std::string(buf, size_t(n));
}

void pwriteAt(const std::string& path, off_t off, const std::string& data) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(pwrite(fd, data.data(), data.size(), off) == ssize_t(data.size()));
  REQUIRE(close(fd) == 0);
}

RunResult snapshot(const std::vector<std::string>& args) {
  std::vector<std::string> argv{adminBin(), "snapshot"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, 60'000);
}

// One line on stderr naming the program, exit 1.
void expectRefused(const RunResult& r, const std::string& words) {
  CAPTURE(r.output);
  CHECK(r.exitCode == 1);
  CHECK(r.output.rfind("tessera: error: ", 0) == 0);
  CHECK(r.output.find(words) != std::string::npos);
  CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
}

}  // namespace

TEST_CASE(
    "snapshot: the copy keeps the old tree while the original changes, and refuses every "
    "write with EROFS") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  std::mt19937_64 rng(testSeed(20240611));
  const std::string dir = cluster.mnt() + "/proj";
  REQUIRE(mkdir(dir.c_str(), 0755) == 0);
  REQUIRE(mkdir((dir + "/a").c_str(), 0750) == 0);
  REQUIRE(mkdir((dir + "/a/b").c_str(), 0700) == 0);
  writeAll(dir + "/a/b/deep", "deep");
  const std::string big = randomBytes(rng, 3 * M);
  writeAll(dir + "/a/big", big);
  REQUIRE(chmod((dir + "/a/big").c_str(), 0640) == 0);
  REQUIRE(setxattr((dir + "/a/big").c_str(), "user.tag", "v1", 2, 0) == 0);
  // Chunks 0 and 3 only: chunks 1 and 2 are a hole.
  pwriteAt(dir + "/sparse", 0, "head");
  pwriteAt(dir + "/sparse", 3 * kChunk + 5, "tail");
  REQUIRE(symlink("a/big", (dir + "/link").c_str()) == 0);
  writeAll(dir + "/h1", "linked");
  REQUIRE(link((dir + "/h1").c_str(), (dir + "/h2").c_str()) == 0);
  REQUIRE(chown((dir + "/h1").c_str(), 1234, 5678) == 0);
  REQUIRE(mkfifo((dir + "/fifo").c_str(), 0640) == 0);
  timespec times[2] = {{1'000'000, 5}, {2'000'000, 7}};
  REQUIRE(utimensat(AT_FDCWD, (dir + "/a/big").c_str(), times, 0) == 0);
  REQUIRE(utimensat(AT_FDCWD, (dir + "/a").c_str(), times, 0) == 0);

  auto made = snapshot({dir, "monday"});
  CAPTURE(made.output);
  REQUIRE(made.exitCode == 0);
  MESSAGE(made.output);
  CHECK(made.output.find("4 files") != std::string::npos);       // big, deep, sparse, h1
  CHECK(made.output.find("1 hard link,") != std::string::npos);  // h2
  const std::string snap = dir + "/.snapshots/monday";
  CHECK((lstatOf(dir + "/.snapshots").st_mode & 07777) == 0755);

  // The original changes: part of a file overwritten, a file deleted, a directory renamed, a
  // mode changed, an xattr changed.
  std::string changed = big;
  changed.replace(size_t(M), 4096, std::string(4096, 'X'));
  pwriteAt(dir + "/a/big", M, std::string(4096, 'X'));
  REQUIRE(unlink((dir + "/h1").c_str()) == 0);
  REQUIRE(rename((dir + "/a/b").c_str(), (dir + "/a/c").c_str()) == 0);
  REQUIRE(chmod((dir + "/a/big").c_str(), 0600) == 0);
  REQUIRE(setxattr((dir + "/a/big").c_str(), "user.tag", "v2", 2, 0) == 0);
  REQUIRE(difference(readAll(dir + "/a/big"), changed) == "");

  // One cluster for all of it (a SUBCASE would start a cluster per branch).
  {
    // The snapshot has the old content, modes, owners, times, xattrs and links.
    CHECK(difference(readAll(snap + "/a/big"), big) == "");
    struct stat st = lstatOf(snap + "/a/big");
    CHECK((st.st_mode & 07777) == 0640);
    CHECK(st.st_mtim.tv_sec == 2'000'000);
    CHECK(st.st_mtim.tv_nsec == 7);
    CHECK(st.st_atim.tv_sec == 1'000'000);
    CHECK(xattr(snap + "/a/big", "user.tag") == "v1");
    CHECK(xattr(snap + "/a/big", "tessera.readonly") == "1");
    CHECK(lstatOf(snap + "/a").st_mtim.tv_sec == 2'000'000);  // set after its children
    CHECK((lstatOf(snap + "/a").st_mode & 07777) == 0750);
    CHECK((lstatOf(snap + "/a/b").st_mode & 07777) == 0700);
    CHECK(readAll(snap + "/a/b/deep") == "deep");
    CHECK(access((snap + "/a/c").c_str(), F_OK) != 0);
    CHECK((lstatOf(snap).st_mode & 07777) == 0755);
    CHECK(xattr(snap, "tessera.readonly") == "1");
    // Only DIR/.snapshots itself is left out.
    CHECK(access((snap + "/.snapshots").c_str(), F_OK) != 0);

    struct stat h1 = lstatOf(snap + "/h1"), h2 = lstatOf(snap + "/h2");
    CHECK(h1.st_ino == h2.st_ino);
    CHECK(h1.st_nlink == 2);
    CHECK(h1.st_uid == 1234);
    CHECK(h1.st_gid == 5678);
    CHECK(readAll(snap + "/h2") == "linked");

    struct stat l = lstatOf(snap + "/link");
    REQUIRE(S_ISLNK(l.st_mode));
    char target[64] = {};
    CHECK(readlink((snap + "/link").c_str(), target, sizeof target) == 5);
    CHECK(std::string(target) == "a/big");
    CHECK(difference(readAll(snap + "/link"), big) == "");
    CHECK(xattr(snap + "/link", "tessera.readonly") == "1");

    struct stat fifo = lstatOf(snap + "/fifo");
    CHECK(S_ISFIFO(fifo.st_mode));
    CHECK((fifo.st_mode & 07777) == 0640);

    struct stat sparse = lstatOf(snap + "/sparse");
    CHECK(sparse.st_size == 3 * kChunk + 9);
    CHECK(preadAt(snap + "/sparse", 0, 4) == "head");
    CHECK(preadAt(snap + "/sparse", 3 * kChunk + 5, 4) == "tail");
    CHECK(preadAt(snap + "/sparse", kChunk + 12345, 4096) == std::string(4096, '\0'));
    // The hole was not copied as zeros: no chunk there.
    int fd = open((snap + "/sparse").c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    CHECK(lseek(fd, kChunk, SEEK_DATA) == 3 * kChunk);
    close(fd);
    CHECK(uint64_t(sparse.st_blocks) * 512 <= uint64_t(2 * kChunk));
  }

  {
    // Every write into the snapshot fails with EROFS and changes nothing.
    const std::string file = snap + "/a/big";
    CHECK(openErr(file, O_WRONLY) == EROFS);
    CHECK(openErr(file, O_RDWR) == EROFS);
    CHECK(openErr(file, O_WRONLY | O_TRUNC) == EROFS);
    CHECK(openErr(file, O_RDONLY) == 0);
    CHECK(openErr(snap + "/new", O_WRONLY | O_CREAT) == EROFS);
    CHECK(err(mkdir((snap + "/newdir").c_str(), 0755)) == EROFS);
    CHECK(err(mknod((snap + "/fifo2").c_str(), S_IFIFO | 0644, 0)) == EROFS);
    CHECK(err(symlink("x", (snap + "/sym2").c_str())) == EROFS);
    CHECK(err(link((dir + "/h2").c_str(), (snap + "/h3").c_str())) == EROFS);
    CHECK(err(link((snap + "/h2").c_str(), (dir + "/h3").c_str())) == EROFS);
    CHECK(err(unlink((snap + "/h1").c_str())) == EROFS);
    CHECK(err(unlink((snap + "/fifo").c_str())) == EROFS);
    CHECK(err(rmdir((snap + "/a/b").c_str())) == EROFS);
    CHECK(err(rename((snap + "/h1").c_str(), (snap + "/h9").c_str())) == EROFS);
    CHECK(err(rename((snap + "/a").c_str(), (dir + "/stolen").c_str())) == EROFS);
    CHECK(err(rename((dir + "/h2").c_str(), (snap + "/h2").c_str())) == EROFS);
    CHECK(err(rename(snap.c_str(), (dir + "/.snapshots/tuesday").c_str())) == EROFS);
    CHECK(err(chmod(file.c_str(), 0777)) == EROFS);
    CHECK(err(chown(file.c_str(), 1, 1)) == EROFS);
    CHECK(err(truncate(file.c_str(), 0)) == EROFS);
    CHECK(err(truncate(file.c_str(), 100)) == EROFS);  // would zero the tail of a stripe first
    CHECK(err(utimensat(AT_FDCWD, file.c_str(), nullptr, 0)) == EROFS);
    CHECK(err(setxattr(file.c_str(), "user.tag", "x", 1, 0)) == EROFS);
    CHECK(err(removexattr(file.c_str(), "user.tag")) == EROFS);
    CHECK(err(setxattr(file.c_str(), "tessera.policy", "replica(2)", 10, 0)) == EROFS);
    CHECK(err(chmod(snap.c_str(), 0700)) == EROFS);

    CHECK(difference(readAll(file), big) == "");
    CHECK((lstatOf(file).st_mode & 07777) == 0640);
    CHECK(xattr(file, "user.tag") == "v1");
    CHECK(lstatOf(snap + "/h1").st_nlink == 2);
    CHECK(access((snap + "/new").c_str(), F_OK) != 0);
    CHECK(access((dir + "/stolen").c_str(), F_OK) != 0);
  }

  {
    // list shows the snapshots, remove deletes one, bad or taken names are refused.
    auto second = snapshot({dir + "/", "tuesday"});
    CAPTURE(second.output);
    REQUIRE(second.exitCode == 0);
    // The second has the changed tree, and not the first snapshot.
    CHECK(difference(readAll(dir + "/.snapshots/tuesday/a/big"), changed) == "");
    CHECK(access((dir + "/.snapshots/tuesday/.snapshots").c_str(), F_OK) != 0);
    auto listed = snapshot({"list", dir});
    CHECK(listed.exitCode == 0);
    CHECK(listed.output == "monday\ntuesday\n");

    for (std::string bad : {"", ".", "..", "a/b", "/x"}) {
      CAPTURE(bad);
      expectRefused(snapshot({dir, bad}), "bad snapshot name");
    }
    expectRefused(snapshot({dir, "monday"}), "exists already");
    expectRefused(snapshot({"remove", dir, "nosuch"}), "no snapshot 'nosuch'");
    expectRefused(snapshot({"remove", dir, ".."}), "bad snapshot name");
    expectRefused(snapshot({"list"}), "usage");
    expectRefused(snapshot({"/tmp", "x"}), "not on a Tessera mount");
    CHECK(difference(readAll(snap + "/a/big"), big) == "");  // the refused ones touched nothing

    auto removed = snapshot({"remove", dir, "monday"});
    CAPTURE(removed.output);
    CHECK(removed.exitCode == 0);
    CHECK(access(snap.c_str(), F_OK) != 0);
    CHECK(snapshot({"list", dir}).output == "tuesday\n");
    CHECK(snapshot({"remove", dir, "tuesday"}).exitCode == 0);
    CHECK(snapshot({"list", dir}).output == "");
    // The original is untouched and still writable.
    CHECK(difference(readAll(dir + "/a/big"), changed) == "");
    writeAll(dir + "/a/big", "rewritten");
    CHECK(readAll(dir + "/a/big") == "rewritten");
  }
}
