// `tessera clone`: the mount's whole-file clone (fs/clone_ioctl.h: one point in time), or where
// the mount has none, copy_file_range over the whole file, in a loop, because the kernel and
// the mount may copy less than asked at once (the mount clones whole chunks and copies
// unaligned pieces; a call stops at a chunk boundary). The destination gets the source's mode;
// its owner is whoever runs the command, as with cp.
#include "tools/clone_cmd.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "fs/clone_ioctl.h"
#include "tools/cli_util.h"

namespace tessera::tools {

namespace {

std::string errnoText(const std::string& what, int err) { return what + ": " + strerror(err); }

}  // namespace

int cloneWholeFile(int in, int out) {
  uint64_t token = 0;
  if (::ioctl(in, TESSERA_IOC_CLONE_TOKEN, &token) != 0) return errno;
  TesseraCloneFrom from{token, 0};
  if (::ioctl(out, TESSERA_IOC_CLONE_FROM, &from) != 0) return errno;
  return 0;
}

int cloneCommand(const std::vector<std::string>& args) {
  std::vector<std::string> paths;
  bool force = false;
  for (auto& a : args) {
    if (a == "--force") {
      force = true;
    } else if (!a.empty() && a[0] == '-') {
      return fail("clone: unknown option " + a);
    } else {
      paths.push_back(a);
    }
  }
  if (paths.size() != 2) return fail("usage: tessera clone SRC DST [--force]");
  const std::string& src = paths[0];
  const std::string& dst = paths[1];
  auto started = std::chrono::steady_clock::now();
  int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return fail(errnoText(src, errno));
  struct stat st;
  if (fstat(in, &st) != 0) {
    int e = errno;
    ::close(in);
    return fail(errnoText(src, e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(in);
    return fail(src + " is not a regular file");
  }
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL);
  int out = ::open(dst.c_str(), flags, st.st_mode & 07777);
  if (out < 0) {
    int e = errno;
    ::close(in);
    if (e == EEXIST) return fail(dst + " exists (--force replaces it)");
    return fail(errnoText(dst, e));
  }
  struct stat dstStat;
  int rc = fstat(out, &dstStat);
  if (rc == 0 && dstStat.st_dev != st.st_dev) {
    ::close(in);
    ::close(out);
    ::unlink(dst.c_str());
    return fail(src + " and " + dst + " are not on one Tessera mount");
  }
  uint64_t done = 0;
  uint64_t size = uint64_t(st.st_size);
  // All at once where the mount can (one point in time, however large the file); else by
  // copy_file_range, piece by piece.
  int whole = cloneWholeFile(in, out);
  if (whole == 0) {
    struct stat cloned;
    if (fstat(out, &cloned) == 0) done = size = uint64_t(cloned.st_size);
  } else if (whole != ENOTTY) {
    ::close(in);
    ::close(out);
    return fail(errnoText("clone " + src + " to " + dst, whole));
  }
  while (whole != 0 && done < size) {
    loff_t offIn = loff_t(done), offOut = loff_t(done);
    ssize_t n = copy_file_range(in, &offIn, out, &offOut, size - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(in);
      ::close(out);
      if (e == EXDEV || e == EOPNOTSUPP || e == ENOSYS) {
        return fail(src + " and " + dst + " are not on one Tessera mount (" + strerror(e) +
                         ")");
      }
      return fail(errnoText("clone " + src + " to " + dst, e));
    }
    if (n == 0) break;  // the source shrank meanwhile
    done += uint64_t(n);
  }
  if (fsync(out) != 0) {
    int e = errno;
    ::close(in);
    ::close(out);
    return fail(errnoText("fsync " + dst, e));
  }
  ::close(in);
  if (::close(out) != 0) return fail(errnoText("close " + dst, errno));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - started)
                .count();
  printf("cloned %s to %s: %llu bytes in %lld ms\n", src.c_str(), dst.c_str(),
         (unsigned long long)done, (long long)ms);
  return 0;
}

}  // namespace tessera::tools
