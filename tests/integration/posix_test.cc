// The namespace through a real mount with ordinary system calls: errno for each error case,
// rename, links, xattrs, big directories, a real source tree.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <set>

#include "tests/integration/helpers.h"

using namespace tessera::test;

namespace {

int err(int rc) { return rc == 0 ? 0 : errno; }

std::set<std::string> listDir(const std::string& path) {
  std::set<std::string> names;
  DIR* d = opendir(path.c_str());
  REQUIRE(d != nullptr);
  while (dirent* e = readdir(d)) names.insert(e->d_name);
  closedir(d);
  return names;
}

}  // namespace

TEST_CASE("posix: every error case returns its errno") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  const std::string m = cluster.mnt();
  REQUIRE(mkdir((m + "/d").c_str(), 0755) == 0);
  writeAll(m + "/d/f", "x");
  CHECK(open((m + "/missing").c_str(), O_RDONLY) == -1);
  CHECK(errno == ENOENT);
  CHECK(err(mkdir((m + "/d").c_str(), 0755)) == EEXIST);
  CHECK(open((m + "/d/f").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644) == -1);
  CHECK(errno == EEXIST);
  CHECK(err(rmdir((m + "/d").c_str())) == ENOTEMPTY);
  CHECK(err(mkdir((m + "/d/f/sub").c_str(), 0755)) == ENOTDIR);
  CHECK(err(unlink((m + "/d").c_str())) == EISDIR);
  CHECK(err(rmdir((m + "/d/f").c_str())) == ENOTDIR);
  std::string longName(256, 'n');
  CHECK(open((m + "/" + longName).c_str(), O_CREAT | O_WRONLY, 0644) == -1);
  CHECK(errno == ENAMETOOLONG);
  std::string maxName(255, 'n');
  writeAll(m + "/" + maxName, "ok");
  CHECK(readAll(m + "/" + maxName) == "ok");
  REQUIRE(mkdir((m + "/d/sub").c_str(), 0755) == 0);
  CHECK(err(rename((m + "/d").c_str(), (m + "/d/sub/inside").c_str())) == EINVAL);
  CHECK(err(rename((m + "/d/f").c_str(), (m + "/d/sub").c_str())) == EISDIR);
  CHECK(err(rename((m + "/d/sub").c_str(), (m + "/d/f").c_str())) == ENOTDIR);
  CHECK(err(link((m + "/d").c_str(), (m + "/dlink").c_str())) == EPERM);
  char buf[8];
  CHECK(getxattr((m + "/d/f").c_str(), "user.none", buf, sizeof buf) == -1);
  CHECK(errno == ENODATA);
}

TEST_CASE("posix: rename moves, replaces, refuses and exchanges — never EXDEV inside the mount") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  const std::string m = cluster.mnt();
  REQUIRE(mkdir((m + "/a").c_str(), 0755) == 0);
  REQUIRE(mkdir((m + "/b").c_str(), 0755) == 0);
  writeAll(m + "/a/one", "1");
  writeAll(m + "/b/two", "2");
  REQUIRE(rename((m + "/a/one").c_str(), (m + "/b/moved").c_str()) == 0);
  CHECK(readAll(m + "/b/moved") == "1");
  CHECK(access((m + "/a/one").c_str(), F_OK) != 0);
  REQUIRE(rename((m + "/b/moved").c_str(), (m + "/b/two").c_str()) == 0);  // replace
  CHECK(readAll(m + "/b/two") == "1");
  CHECK(listDir(m + "/b") == std::set<std::string>{".", "..", "two"});
  writeAll(m + "/a/x", "x");
  CHECK(renameat2(AT_FDCWD, (m + "/a/x").c_str(), AT_FDCWD, (m + "/b/two").c_str(),
                  RENAME_NOREPLACE) == -1);
  CHECK(errno == EEXIST);
  REQUIRE(renameat2(AT_FDCWD, (m + "/a/x").c_str(), AT_FDCWD, (m + "/b/two").c_str(),
                    RENAME_EXCHANGE) == 0);
  CHECK(readAll(m + "/a/x") == "1");
  CHECK(readAll(m + "/b/two") == "x");
  // Directories: over an empty one works, over a non-empty one does not; nlink follows.
  REQUIRE(mkdir((m + "/a/dir").c_str(), 0755) == 0);
  REQUIRE(mkdir((m + "/b/empty").c_str(), 0755) == 0);
  REQUIRE(rename((m + "/a/dir").c_str(), (m + "/b/empty").c_str()) == 0);
  struct stat st;
  REQUIRE(stat((m + "/a").c_str(), &st) == 0);
  CHECK(st.st_nlink == 2);
  REQUIRE(stat((m + "/b").c_str(), &st) == 0);
  CHECK(st.st_nlink == 3);
  REQUIRE(mkdir((m + "/a/full").c_str(), 0755) == 0);
  writeAll(m + "/a/full/f", "f");
  CHECK(err(rename((m + "/b/empty").c_str(), (m + "/a/full").c_str())) == ENOTEMPTY);
  CHECK(err(rename((m + "/a/full").c_str(), (m + "/b/deep").c_str())) == 0);
  CHECK(readAll(m + "/b/deep/f") == "f");
}

TEST_CASE("posix: hard links, symlinks, chmod, chown, utimes and unlink-while-open") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  const std::string m = cluster.mnt();
  writeAll(m + "/orig", "linked data");
  REQUIRE(link((m + "/orig").c_str(), (m + "/hard").c_str()) == 0);
  struct stat a, b;
  REQUIRE(stat((m + "/orig").c_str(), &a) == 0);
  REQUIRE(stat((m + "/hard").c_str(), &b) == 0);
  CHECK(a.st_ino == b.st_ino);
  CHECK(a.st_nlink == 2);
  REQUIRE(unlink((m + "/orig").c_str()) == 0);
  CHECK(readAll(m + "/hard") == "linked data");
  REQUIRE(stat((m + "/hard").c_str(), &b) == 0);
  CHECK(b.st_nlink == 1);

  REQUIRE(symlink("hard", (m + "/sym").c_str()) == 0);
  char target[64] = {};
  CHECK(readlink((m + "/sym").c_str(), target, sizeof target) == 4);
  CHECK(std::string(target) == "hard");
  CHECK(readAll(m + "/sym") == "linked data");
  struct stat l;
  REQUIRE(lstat((m + "/sym").c_str(), &l) == 0);
  CHECK(S_ISLNK(l.st_mode));

  REQUIRE(chmod((m + "/hard").c_str(), 0600) == 0);
  REQUIRE(chown((m + "/hard").c_str(), 1234, 5678) == 0);
  timespec times[2] = {{1'000'000, 5}, {2'000'000, 7}};
  REQUIRE(utimensat(AT_FDCWD, (m + "/hard").c_str(), times, 0) == 0);
  REQUIRE(stat((m + "/hard").c_str(), &b) == 0);
  CHECK((b.st_mode & 07777) == 0600);
  CHECK(b.st_uid == 1234);
  CHECK(b.st_gid == 5678);
  CHECK(b.st_mtim.tv_sec == 2'000'000);
  CHECK(b.st_mtim.tv_nsec == 7);
  CHECK(b.st_atim.tv_sec == 1'000'000);

  // A file unlinked while open stays readable through the open descriptor.
  writeAll(m + "/doomed", std::string(300'000, 'd'));
  int fd = open((m + "/doomed").c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  REQUIRE(unlink((m + "/doomed").c_str()) == 0);
  CHECK(access((m + "/doomed").c_str(), F_OK) != 0);
  std::string buf(300'000, '\0');
  CHECK(pread(fd, buf.data(), buf.size(), 0) == ssize_t(buf.size()));
  CHECK(buf == std::string(300'000, 'd'));
  close(fd);
}

TEST_CASE("posix: extended attributes set, get, list, replace and remove") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  const std::string f = cluster.mnt() + "/x";
  writeAll(f, "");
  REQUIRE(setxattr(f.c_str(), "user.colour", "blue", 4, 0) == 0);
  REQUIRE(setxattr(f.c_str(), "user.size", "XL", 2, 0) == 0);
  char v[16] = {};
  CHECK(getxattr(f.c_str(), "user.colour", v, sizeof v) == 4);
  CHECK(std::string(v, 4) == "blue");
  CHECK(getxattr(f.c_str(), "user.colour", nullptr, 0) == 4);
  CHECK(getxattr(f.c_str(), "user.colour", v, 2) == -1);
  CHECK(errno == ERANGE);
  CHECK(setxattr(f.c_str(), "user.colour", "red", 3, XATTR_CREATE) == -1);
  CHECK(errno == EEXIST);
  CHECK(setxattr(f.c_str(), "user.new", "n", 1, XATTR_REPLACE) == -1);
  CHECK(errno == ENODATA);
  REQUIRE(setxattr(f.c_str(), "user.colour", "red", 3, XATTR_REPLACE) == 0);
  char names[128];
  ssize_t n = listxattr(f.c_str(), names, sizeof names);
  REQUIRE(n > 0);
  std::set<std::string> listed;
  for (ssize_t i = 0; i < n; i += ssize_t(strlen(names + i)) + 1) listed.insert(names + i);
  CHECK(listed == std::set<std::string>{"user.colour", "user.size"});
  REQUIRE(removexattr(f.c_str(), "user.size") == 0);
  CHECK(getxattr(f.c_str(), "user.size", v, sizeof v) == -1);
  CHECK(errno == ENODATA);
  // ACLs are not enforced, so they are not stored either: tools fall back to the mode bits.
  // (A well-formed ACL: the kernel refuses malformed ones itself.)
  const uint32_t acl[] = {2, 1 | 6u << 16, 0xffffffff, 4 | 4u << 16, 0xffffffff,
                          0x20 | 4u << 16, 0xffffffff};
  CHECK(setxattr(f.c_str(), "system.posix_acl_access", acl, sizeof acl, 0) == -1);
  CHECK(errno == EOPNOTSUPP);
  std::string big(64 * 1024, 'b');
  REQUIRE(setxattr(f.c_str(), "user.big", big.data(), big.size(), 0) == 0);
  std::string back(big.size(), '\0');
  CHECK(getxattr(f.c_str(), "user.big", back.data(), back.size()) == ssize_t(big.size()));
  CHECK(back == big);
}

TEST_CASE("posix: a directory of 10,000 entries lists each exactly once and empties with rm -rf") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  const std::string d = cluster.mnt() + "/many";
  REQUIRE(mkdir(d.c_str(), 0755) == 0);
  for (int i = 0; i < 10'000; ++i) {
    int fd = open((d + "/file-" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    close(fd);
  }
  DIR* dir = opendir(d.c_str());
  REQUIRE(dir != nullptr);
  std::multiset<std::string> seen;
  while (dirent* e = readdir(dir)) seen.insert(e->d_name);
  closedir(dir);
  CHECK(seen.size() == 10'002);
  for (int i = 0; i < 10'000; i += 997) CHECK(seen.count("file-" + std::to_string(i)) == 1);
  struct statvfs v;
  REQUIRE(statvfs(cluster.mnt().c_str(), &v) == 0);
  CHECK(v.f_blocks > 0);
  CHECK(v.f_files - v.f_ffree >= 10'000);
  auto rm = run({"/bin/rm", "-rf", d}, 600'000);
  CHECK_MESSAGE(rm.exitCode == 0, rm.output);
  CHECK(access(d.c_str(), F_OK) != 0);
}

TEST_CASE("posix: cp -a of /usr/include is identical under diff -r") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  const std::string dst = cluster.mnt() + "/include";
  auto cp = run({"/bin/cp", "-a", "/usr/include", dst}, 900'000);
  REQUIRE_MESSAGE(cp.exitCode == 0, cp.output.substr(0, 2000));
  auto diff = run({"/usr/bin/diff", "-r", "--no-dereference", "/usr/include", dst}, 900'000);
  CHECK_MESSAGE(diff.exitCode == 0, diff.output.substr(0, 2000));
  auto files = sh("find /usr/include | wc -l");
  MESSAGE("copied " << files.output.substr(0, files.output.size() - 1) << " entries");
}
