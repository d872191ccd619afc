// `tessera snapshot` (tools/snapshot_cmd.h): a copy of a tree made through the mount, then frozen.
//
// Why the order of things matters:
//   - A node's metadata is set after its content (a write would change mtime), and a
//     directory's after its children (each new entry changes the directory's mtime).
//   - xattrs before chown and chmod: once the mode drops write permission, the kernel refuses to
//     set them for anyone but root; chown before chmod, because chown clears set-id bits.
//   - Freezing comes last and goes children first: a frozen directory takes no new entries and
//     a frozen file no writes, so nothing can be frozen before its copy is complete. The
//     snapshot's root is frozen last of all, so a snapshot whose root is frozen is complete.
//   - Removal unfreezes top-down first: a frozen directory refuses to lose entries and a frozen
//     inode refuses to go, so nothing can be deleted before all of it is unfrozen.
#include "tools/snapshot_cmd.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <utility>

#include "fs/result.h"
#include "fs/types.h"
#include "tools/cli_util.h"
#include "tools/clone_cmd.h"

namespace tessera::tools {
namespace {

constexpr const char* kSnapshotsDir = ".snapshots";
constexpr const char* kReadOnlyXattr = "tessera.readonly";
constexpr const char* kUsage =
    "usage: tessera snapshot DIR NAME | tessera snapshot list DIR | "
    "tessera snapshot remove DIR NAME";
// A file frozen right after its copy was closed may still be under the write lease the mount
// took to write it (the kernel sends the release after close(2) returned), and the meta server
// refuses to freeze a file with a lease held (EBUSY): it lets go within moments.
constexpr double kBusyRetrySeconds = 30;
constexpr size_t kCopyBuffer = 1 << 20;

double seconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

// errno of the call that just failed, as an Error naming what was done.
Error sysError(const std::string& what) {
  int e = errno;
  Errc code = e == ENOENT   ? Errc::kNotFound
              : e == EEXIST ? Errc::kExists
              : e == EROFS  ? Errc::kReadOnly
              : e == EBUSY  ? Errc::kBusy
                            : Errc::kIo;
  return Error{code, what + ": " + strerror(e)};
}

std::string join(const std::string& dir, const std::string& name) { return dir + "/" + name; }

// The entries of `dir` but "." and "..", sorted (the copy and its messages come out the same
// every time).
Result<std::vector<std::string>> listDir(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (!d) return sysError("read directory " + dir);
  std::vector<std::string> names;
  errno = 0;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
    errno = 0;
  }
  Status s = errno == 0 ? Status() : Status(sysError("read directory " + dir));
  closedir(d);
  if (!s) return s.error();
  std::sort(names.begin(), names.end());
  return names;
}

Status checkName(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
    return Error{Errc::kInvalid, "bad snapshot name '" + name +
                                     "': it must not be empty, '.' or '..', nor contain '/'"};
  }
  if (name.size() > kMaxNameLen) {
    return Error{Errc::kNameTooLong, "snapshot name longer than " + std::to_string(kMaxNameLen)};
  }
  return Status();
}

// `dir` must be a directory on a Tessera mount: only there does it have tessera.policy.
Status checkTesseraDir(const std::string& dir) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) return sysError(dir);
  if (!S_ISDIR(st.st_mode)) return Error{Errc::kNotDir, dir + " is not a directory"};
  char policy[64];
  if (getxattr(dir.c_str(), "tessera.policy", policy, sizeof policy) < 0) {
    if (errno == ENOTSUP || errno == ENODATA) {
      return Error{Errc::kNotSupported, dir + " is not on a Tessera mount"};
    }
    return sysError(dir);
  }
  return Status();
}

struct CopyStats {
  uint64_t files = 0, dirs = 0, symlinks = 0, others = 0, hardLinks = 0;
  uint64_t bytes = 0;         // file content copied; holes are not
  uint64_t bytesByRange = 0;  // of those, by copy_file_range
  uint64_t vanished = 0;      // entries deleted while the copy ran
};

// Copies one tree into another through the mount, node by node (see the top of this file).
class TreeCopy {
 public:
  explicit TreeCopy(CopyStats& stats) : stats_(stats) {}

  // Copies the entries of directory `src` into the existing directory `dst`, leaving out the
  // entry named `skip`.
  Status copyEntries(const std::string& src, const std::string& dst, const std::string& skip) {
    auto names = listDir(src);
    if (!names) return names.error();
    for (const std::string& name : *names) {
      if (name == skip) continue;
      if (Status s = copyNode(join(src, name), join(dst, name)); !s) return s;
    }
    return Status();
  }

  // The metadata of node `src` onto `dst`: xattrs, owner, mode, times.
  Status copyMeta(const std::string& src, const std::string& dst, const struct stat& st) {
    if (Status s = copyXattrs(src, dst); !s) return s;
    if (lchown(dst.c_str(), st.st_uid, st.st_gid) != 0) {
      // As `cp -a`: someone else's files become the copier's own, unless the copier is root.
      if (errno != EPERM || geteuid() == 0) return sysError("chown " + dst);
    }
    if (!S_ISLNK(st.st_mode) && chmod(dst.c_str(), st.st_mode & 07777) != 0) {
      return sysError("chmod " + dst);
    }
    timespec times[2] = {st.st_atim, st.st_mtim};
    if (utimensat(AT_FDCWD, dst.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
      return sysError("set times of " + dst);
    }
    return Status();
  }

 private:
  Status copyNode(const std::string& src, const std::string& dst) {
    struct stat st;
    if (lstat(src.c_str(), &st) != 0) {
      // Deleted since its directory was read: the copy is not one point in time anyway.
      if (errno == ENOENT) return vanished();
      return sysError("stat " + src);
    }
    if (S_ISREG(st.st_mode) && st.st_nlink > 1) {
      auto first = linked_.find({st.st_dev, st.st_ino});
      if (first != linked_.end()) {
        // Another name of a file copied already: the same inode, so no metadata to copy.
        if (link(first->second.c_str(), dst.c_str()) != 0) return sysError("link " + dst);
        stats_.hardLinks++;
        return Status();
      }
      linked_.emplace(std::make_pair(st.st_dev, st.st_ino), dst);
    }
    switch (st.st_mode & S_IFMT) {
      case S_IFDIR:
        // Owner-only until its metadata comes, after its children.
        if (mkdir(dst.c_str(), 0700) != 0) return sysError("mkdir " + dst);
        if (Status s = copyEntries(src, dst, ""); !s) return s;
        stats_.dirs++;
        break;
      case S_IFREG: {
        auto copied = copyFile(src, dst, st);
        if (!copied) return copied.error();
        if (!*copied) return vanished();
        stats_.files++;
        break;
      }
      case S_IFLNK: {
        auto target = readLink(src, st);
        if (!target) return target.code() == Errc::kNotFound ? vanished() : target.error();
        if (symlink(target->c_str(), dst.c_str()) != 0) return sysError("symlink " + dst);
        stats_.symlinks++;
        break;
      }
      default:
        // Fifos, sockets and devices: only the node, with its device number.
        if (mknod(dst.c_str(), (st.st_mode & S_IFMT) | 0600, st.st_rdev) != 0) {
          return sysError("mknod " + dst);
        }
        stats_.others++;
        break;
    }
    return copyMeta(src, dst, st);
  }

  Status vanished() {
    stats_.vanished++;
    return Status();
  }

  Result<std::string> readLink(const std::string& src, const struct stat& st) {
    // st_size is the target's length, unless it changed since: then read again, bigger.
    for (size_t size = size_t(st.st_size) + 1;; size *= 2) {
      std::string target(size, '\0');
      ssize_t n = readlink(src.c_str(), target.data(), size);
      if (n < 0) return sysError("readlink " + src);
      if (size_t(n) < size) return target.substr(0, size_t(n));
    }
  }

  Status copyXattrs(const std::string& src, const std::string& dst) {
    ssize_t size = llistxattr(src.c_str(), nullptr, 0);
    if (size < 0) {
      if (errno == ENOTSUP) return Status();
      return sysError("list xattrs of " + src);
    }
    std::string names(size_t(size), '\0');
    size = llistxattr(src.c_str(), names.data(), names.size());
    if (size < 0) return sysError("list xattrs of " + src);
    names.resize(size_t(size));
    for (size_t at = 0; at < names.size();) {
      std::string name = names.c_str() + at;
      at += name.size() + 1;
      // The mount's own attributes are not data: a policy belongs to where a file lives, and
      // the copy is frozen separately, at the end.
      if (name.rfind("tessera.", 0) == 0) continue;
      std::string value(kMaxXattrValue, '\0');
      ssize_t n = lgetxattr(src.c_str(), name.c_str(), value.data(), value.size());
      if (n < 0) {
        if (errno == ENODATA) continue;  // removed since it was listed
        return sysError("get xattr " + name + " of " + src);
      }
      if (lsetxattr(dst.c_str(), name.c_str(), value.data(), size_t(n), 0) != 0) {
        return sysError("set xattr " + name + " on " + dst);
      }
    }
    return Status();
  }

  // False if `src` was deleted before it could be opened.
  Result<bool> copyFile(const std::string& src, const std::string& dst, const struct stat& st) {
    int in = open(src.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0) {
      if (errno == ENOENT) return false;
      return sysError("open " + src);
    }
    int out = open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0) {
      Error e = sysError("create " + dst);
      close(in);
      return e;
    }
    uint64_t size = uint64_t(st.st_size);
    // The whole file at one point in time where the mount can; else range by range.
    Status s;
    int whole = wholeWorks_ ? cloneWholeFile(in, out) : ENOTTY;
    if (whole == 0) {
      struct stat cloned;
      if (fstat(out, &cloned) == 0) {
        stats_.bytes += uint64_t(cloned.st_size);
        stats_.bytesByRange += uint64_t(cloned.st_size);
      }
    } else if (whole != ENOTTY) {
      errno = whole;
      s = sysError("clone " + src);
    } else {
      wholeWorks_ = false;
      s = copyData(in, out, size, src);
      // The size last: a hole at the end has no data to copy.
      if (s && ftruncate(out, off_t(size)) != 0) s = sysError("truncate " + dst);
    }
    close(in);
    // close(2) reports what the mount failed to write back.
    if (close(out) != 0 && s) s = sysError("close " + dst);
    if (!s) return s.error();
    return true;
  }

  // The data of `in` below `size` into `out` at the same offsets, hole by hole: what reads as a
  // hole (SEEK_HOLE) is not copied, so a sparse file stays sparse.
  Status copyData(int in, int out, uint64_t size, const std::string& what) {
    uint64_t at = 0;
    while (at < size) {
      off_t data = lseek(in, off_t(at), SEEK_DATA);
      if (data < 0 && errno == ENXIO) break;  // nothing but a hole up to the end
      if (data < 0 && errno != EINVAL) return sysError("seek data in " + what);
      off_t hole = data < 0 ? -1 : lseek(in, data, SEEK_HOLE);
      if (data < 0 || hole < 0) {
        // No SEEK_DATA here: all of the rest is data.
        data = off_t(at);
        hole = off_t(size);
      }
      uint64_t from = uint64_t(data);
      uint64_t to = std::min(uint64_t(hole), size);
      if (from >= to) break;
      if (Status s = copyRange(in, out, from, to - from, what); !s) return s;
      at = to;
    }
    return Status();
  }

  // [off, off + len) of `in` to the same place in `out`: by copy_file_range as long as it takes
  // it (each call may copy less than asked: loop on what it says it did), then read/write.
  Status copyRange(int in, int out, uint64_t off, uint64_t len, const std::string& what) {
    uint64_t done = 0;
    while (done < len && rangeWorks_) {
      loff_t inOff = loff_t(off + done), outOff = loff_t(off + done);
      ssize_t n = copy_file_range(in, &inOff, out, &outOff, size_t(len - done), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EXDEV || errno == EOPNOTSUPP || errno == ENOSYS) {
          // Not between these files: by hand from here on, for every file.
          rangeWorks_ = false;
          break;
        }
        return sysError("copy_file_range from " + what);
      }
      // The file ended early: it shrank since we looked.
      if (n == 0) return Status();
      done += uint64_t(n);
      stats_.bytes += uint64_t(n);
      stats_.bytesByRange += uint64_t(n);
    }
    if (done < len && buffer_.empty()) buffer_.resize(kCopyBuffer);
    while (done < len) {
      ssize_t n = pread(in, buffer_.data(), std::min<uint64_t>(len - done, buffer_.size()),
                        off_t(off + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return sysError("read " + what);
      }
      if (n == 0) return Status();
      for (ssize_t written = 0; written < n;) {
        ssize_t w =
            pwrite(out, buffer_.data() + written, size_t(n - written), off_t(off + done) + written);
        if (w < 0) {
          if (errno == EINTR) continue;
          return sysError("write the copy of " + what);
        }
        written += w;
      }
      done += uint64_t(n);
      stats_.bytes += uint64_t(n);
    }
    return Status();
  }

  CopyStats& stats_;
  // The copy of each file with more than one name, by the source's (device, inode).
  std::map<std::pair<dev_t, ino_t>, std::string> linked_;
  // False once copy_file_range said it cannot copy here (EXDEV, EOPNOTSUPP, ENOSYS).
  bool rangeWorks_ = true;
  // False once the mount said it has no whole-file clone (ENOTTY).
  bool wholeWorks_ = true;
  std::string buffer_;
};

// Sets tessera.readonly on `path`, waiting out a write lease that is still being let go.
Status freezeNode(const std::string& path) {
  double deadline = seconds() + kBusyRetrySeconds;
  while (lsetxattr(path.c_str(), kReadOnlyXattr, "1", 1, 0) != 0) {
    if (errno != EBUSY || seconds() > deadline) return sysError("freeze " + path);
    usleep(50'000);
  }
  return Status();
}

// Freezes every node under and at `path`, children before their directory.
Status freezeTree(const std::string& path, uint64_t& count) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return sysError("stat " + path);
  if (S_ISDIR(st.st_mode)) {
    auto names = listDir(path);
    if (!names) return names.error();
    for (const std::string& name : *names) {
      if (Status s = freezeTree(join(path, name), count); !s) return s;
    }
  }
  if (Status s = freezeNode(path); !s) return s;
  count++;
  return Status();
}

// Clears tessera.readonly on every node at and under `path`, directories before what they hold.
Status unfreezeTree(const std::string& path) {
  if (lremovexattr(path.c_str(), kReadOnlyXattr) != 0 && errno != ENODATA) {
    return sysError("unfreeze " + path);
  }
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return sysError("stat " + path);
  if (!S_ISDIR(st.st_mode)) return Status();
  auto names = listDir(path);
  if (!names) return names.error();
  for (const std::string& name : *names) {
    if (Status s = unfreezeTree(join(path, name)); !s) return s;
  }
  return Status();
}

// Deletes `path` and all under it (all of it unfrozen).
Status removeTree(const std::string& path, uint64_t& count) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return sysError("stat " + path);
  if (S_ISDIR(st.st_mode)) {
    auto names = listDir(path);
    if (!names) return names.error();
    for (const std::string& name : *names) {
      if (Status s = removeTree(join(path, name), count); !s) return s;
    }
    if (rmdir(path.c_str()) != 0) return sysError("rmdir " + path);
  } else if (unlink(path.c_str()) != 0) {
    return sysError("unlink " + path);
  }
  count++;
  return Status();
}

// DIR/.snapshots, made (0755) if `create` and missing. kNotFound if missing otherwise.
Result<std::string> snapshotsDir(const std::string& dir, bool create) {
  std::string path = join(dir, kSnapshotsDir);
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return Error{Errc::kNotDir, path + " exists and is not a directory"};
    return path;
  }
  if (errno != ENOENT || !create) return sysError(path);
  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) return sysError("mkdir " + path);
  // Exactly 0755, whatever the umask.
  if (chmod(path.c_str(), 0755) != 0) return sysError("chmod " + path);
  return path;
}

std::string plural(uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

int createSnapshot(const std::string& dirArg, const std::string& name) {
  if (Status s = checkName(name); !s) return fail(s.error().detail);
  std::string dir =
      dirArg.size() > 1 && dirArg.back() == '/' ? dirArg.substr(0, dirArg.size() - 1) : dirArg;
  if (Status s = checkTesseraDir(dir); !s) return fail(s.error().detail);
  double start = seconds();
  auto snapshots = snapshotsDir(dir, true);
  if (!snapshots) return fail(snapshots.error().detail);
  std::string root = join(*snapshots, name);
  struct stat st;
  if (lstat(root.c_str(), &st) == 0) {
    return fail("snapshot '" + name + "' of " + dir + " exists already (" + root + ")");
  }
  if (errno != ENOENT) return fail(sysError(root).detail);
  if (mkdir(root.c_str(), 0700) != 0) {
    if (errno == EEXIST) return fail("snapshot '" + name + "' of " + dir + " exists already");
    return fail(sysError("mkdir " + root).detail);
  }

  CopyStats stats;
  TreeCopy copy(stats);
  uint64_t frozen = 0;
  Status s = copy.copyEntries(dir, root, kSnapshotsDir);
  if (s && lstat(dir.c_str(), &st) != 0) s = sysError("stat " + dir);
  if (s) s = copy.copyMeta(dir, root, st);
  if (s) s = freezeTree(root, frozen);
  if (!s) {
    // Leave nothing half made behind: the same NAME can be tried again.
    uint64_t removed = 0;
    bool cleaned = unfreezeTree(root).ok() && removeTree(root, removed).ok();
    return fail(s.error().detail +
                (cleaned ? "; the partial snapshot was removed"
                         : "; a partial snapshot is left at " + root +
                               " (tessera snapshot remove " + dir + " " + name + ")"));
  }
  printf(
      "snapshot %s of %s: %s (%s, %s of it by copy_file_range), %s, %s, %s, %s; "
      "%lu nodes frozen in %.1fs\n",
      root.c_str(), dir.c_str(), plural(stats.files, "file", "files").c_str(),
      human(stats.bytes).c_str(), human(stats.bytesByRange).c_str(),
      plural(stats.dirs + 1, "directory", "directories").c_str(),
      plural(stats.symlinks, "symlink", "symlinks").c_str(),
      plural(stats.hardLinks, "hard link", "hard links").c_str(),
      plural(stats.others, "other node", "other nodes").c_str(), (unsigned long)frozen,
      seconds() - start);
  if (stats.vanished > 0) {
    printf("%s deleted while the copy ran: not in the snapshot\n",
           plural(stats.vanished, "entry was", "entries were").c_str());
  }
  return 0;
}

int listSnapshots(const std::string& dir) {
  if (Status s = checkTesseraDir(dir); !s) return fail(s.error().detail);
  auto snapshots = snapshotsDir(dir, false);
  if (!snapshots) {
    if (snapshots.code() == Errc::kNotFound) return 0;  // none taken yet
    return fail(snapshots.error().detail);
  }
  auto names = listDir(*snapshots);
  if (!names) return fail(names.error().detail);
  for (const std::string& name : *names) {
    struct stat st;
    if (lstat(join(*snapshots, name).c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      printf("%s\n", name.c_str());
    }
  }
  return 0;
}

int removeSnapshot(const std::string& dir, const std::string& name) {
  if (Status s = checkName(name); !s) return fail(s.error().detail);
  if (Status s = checkTesseraDir(dir); !s) return fail(s.error().detail);
  std::string root = join(join(dir, kSnapshotsDir), name);
  struct stat st;
  if (lstat(root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return fail("no snapshot '" + name + "' of " + dir);
  }
  double start = seconds();
  if (Status s = unfreezeTree(root); !s) return fail(s.error().detail);
  uint64_t removed = 0;
  if (Status s = removeTree(root, removed); !s) return fail(s.error().detail);
  printf("removed snapshot %s of %s: %lu nodes in %.1fs\n", name.c_str(), dir.c_str(),
         (unsigned long)removed, seconds() - start);
  return 0;
}

}  // namespace

int snapshotCommand(const std::vector<std::string>& args) {
  std::string sub = args.empty() ? "" : args[0];
  // A directory named like a subcommand is written ./list.
  if (sub == "list") return args.size() == 2 ? listSnapshots(args[1]) : fail(kUsage);
  if (sub == "remove") return args.size() == 3 ? removeSnapshot(args[1], args[2]) : fail(kUsage);
  if (sub == "create") return args.size() == 3 ? createSnapshot(args[1], args[2]) : fail(kUsage);
  if (args.size() == 2) return createSnapshot(args[0], args[1]);
  return fail(kUsage);
}

}  // namespace tessera::tools
