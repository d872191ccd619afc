// Raft snapshots of the namespace: reading a consistent view in pieces, writing pieces into a
// staging store, and swapping it in. The formats and the crash story are in snapshot.h.
#include "meta/ns/snapshot.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/iterator.h>
#include <leveldb/write_batch.h>

#include "fs/checksum.h"
#include "fs/log.h"
#include "meta/ns/keys.h"
#include "meta/ns/namespace_impl.h"
#include "meta/ns/records.h"
#include "meta/ns/txn.h"

namespace tessera::meta {
namespace {

// A piece larger than this was not cut by a SnapshotReader.
constexpr size_t kMaxPiece = 256 << 20;

void put32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
}
uint32_t get32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | uint8_t(p[i]);
  return v;
}

leveldb::Env* envOf(leveldb::Env* env) { return env ? env : leveldb::Env::Default(); }
bool onDisk(leveldb::Env* env) { return env == nullptr || env == leveldb::Env::Default(); }

std::string installPath(const std::string& path) { return path + ".install"; }
std::string readyPath(const std::string& path) { return path + ".ready"; }
std::string oldPath(const std::string& path) { return path + ".old"; }

// The files in `dir`; empty if it does not exist.
std::vector<std::string> children(leveldb::Env* env, const std::string& dir) {
  std::vector<std::string> names, out;
  if (!envOf(env)->GetChildren(dir, &names).ok()) return out;
  for (auto& n : names) {
    if (n != "." && n != "..") out.push_back(n);
  }
  return out;
}

bool exists(leveldb::Env* env, const std::string& dir) { return !children(env, dir).empty(); }

// Deletes a closed store (or what is left of one). LevelDB stores have no subdirectories.
Status removeStore(leveldb::Env* env, const std::string& dir) {
  leveldb::Env* e = envOf(env);
  for (auto& name : children(env, dir)) {
    leveldb::Status s = e->RemoveFile(dir + "/" + name);
    if (!s.ok() && e->FileExists(dir + "/" + name)) return storeError(s, "remove " + dir);
  }
  (void)e->RemoveDir(dir);  // absent already, or an in-memory env without directories
  return Status();
}

Status fsyncPath(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error{Errc::kIo, "sync: open " + path + ": " + strerror(errno)};
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Error{Errc::kIo, "sync: fsync " + path + ": " + strerror(err)};
  return Status();
}

std::string parentOf(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Renames a closed store directory. On disk one rename(2), made durable with its parent; an
// in-memory env (tests) has no directories, so its files move one by one.
Status renameStore(leveldb::Env* env, const std::string& from, const std::string& to) {
  if (onDisk(env)) {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return Error{Errc::kIo, "rename " + from + " to " + to + ": " + strerror(errno)};
    }
    return fsyncPath(parentOf(to));
  }
  leveldb::Env* e = envOf(env);
  (void)e->CreateDir(to);
  for (auto& name : children(env, from)) {
    leveldb::Status s = e->RenameFile(from + "/" + name, to + "/" + name);
    if (!s.ok()) return storeError(s, "rename " + from);
  }
  (void)e->RemoveDir(from);
  return Status();
}

leveldb::Options storeOptions(const leveldb::FilterPolicy* filter, leveldb::Env* env) {
  leveldb::Options options;
  options.create_if_missing = true;
  options.filter_policy = filter;
  if (env) options.env = env;
  return options;
}

// The applied index of a closed store.
Result<uint64_t> appliedOf(const std::string& path, leveldb::Env* env) {
  leveldb::Options options;
  if (env) options.env = env;
  leveldb::DB* raw = nullptr;
  leveldb::Status s = leveldb::DB::Open(options, path, &raw);
  if (!s.ok()) return storeError(s, "open " + path);
  std::unique_ptr<leveldb::DB> db(raw);
  std::string bytes;
  s = db->Get(leveldb::ReadOptions(), keys::counter(keys::kApplied), &bytes);
  if (s.IsNotFound()) return uint64_t(0);
  if (!s.ok()) return storeError(s, "read " + path);
  return decodeU64(bytes);
}

}  // namespace

// Every case of snapshot.h's crash list, in the order installSnapshot() goes through them.
Status recoverSnapshotInstall(const std::string& path, leveldb::Env* env) {
  if (exists(env, installPath(path))) {
    log::warn("namespace: dropping an unfinished snapshot install in ", installPath(path).c_str());
    if (Status s = removeStore(env, installPath(path)); !s) return s;
  }
  if (exists(env, readyPath(path)) && exists(env, path)) {
    // Finished but not switched: the node may have decided against it (it applied past it
    // meanwhile). Never go back.
    auto current = appliedOf(path, env);
    auto staged = appliedOf(readyPath(path), env);
    if (!current) return current.error();
    if (!staged || *staged <= *current) {
      log::warn("namespace: dropping a staged snapshot that is not ahead of the store");
      if (Status s = removeStore(env, readyPath(path)); !s) return s;
    }
  }
  if (exists(env, readyPath(path))) {
    log::warn("namespace: completing a snapshot install that a stop interrupted");
    if (exists(env, path)) {
      if (Status s = removeStore(env, oldPath(path)); !s) return s;
      if (Status s = renameStore(env, path, oldPath(path)); !s) return s;
    }
    if (Status s = renameStore(env, readyPath(path), path); !s) return s;
  }
  if (exists(env, oldPath(path))) {
    if (!exists(env, path)) {
      // Not a state installSnapshot() leaves; the old store is all there is.
      return renameStore(env, oldPath(path), path);
    }
    return removeStore(env, oldPath(path));
  }
  return Status();
}

// --- SnapshotReader ------------------------------------------------------------------------

SnapshotReader::SnapshotReader(Namespace& ns)
    : impl_(*ns.impl_), snapshot_(impl_.db->GetSnapshot()) {
  leveldb::ReadOptions options;
  options.snapshot = snapshot_;
  options.fill_cache = false;  // one pass over everything: do not evict the hot set
  std::string applied;
  if (impl_.db->Get(options, keys::counter(keys::kApplied), &applied).ok()) {
    auto v = decodeU64(applied);
    if (v) applied_ = *v;
  }
  it_.reset(impl_.db->NewIterator(options));
  it_->SeekToFirst();
}

SnapshotReader::~SnapshotReader() {
  it_.reset();
  impl_.db->ReleaseSnapshot(snapshot_);
}

bool SnapshotReader::done() const { return !it_->Valid(); }

Result<std::string> SnapshotReader::next(size_t maxBytes) {
  std::string piece;
  while (it_->Valid()) {
    leveldb::Slice k = it_->key(), v = it_->value();
    size_t size = 8 + k.size() + v.size();
    if (!piece.empty() && piece.size() + size > maxBytes) break;
    put32(piece, uint32_t(k.size()));
    put32(piece, uint32_t(v.size()));
    piece.append(k.data(), k.size());
    piece.append(v.data(), v.size());
    it_->Next();
  }
  if (!it_->status().ok()) return storeError(it_->status(), "snapshot read");
  offset_ += piece.size();
  return piece;
}

// --- SnapshotWriter ------------------------------------------------------------------------

SnapshotWriter::SnapshotWriter(Namespace::Impl& impl, std::unique_ptr<leveldb::DB> db)
    : impl_(impl), db_(std::move(db)) {}

SnapshotWriter::~SnapshotWriter() = default;

Result<std::unique_ptr<SnapshotWriter>> SnapshotWriter::create(Namespace& ns) {
  Namespace::Impl& impl = *ns.impl_;
  for (const std::string& stale : {installPath(impl.path), readyPath(impl.path)}) {
    if (Status s = removeStore(impl.env, stale); !s) return s.error();
  }
  leveldb::Options options = storeOptions(impl.filter.get(), impl.env);
  options.error_if_exists = true;
  leveldb::DB* db = nullptr;
  leveldb::Status s = leveldb::DB::Open(options, installPath(impl.path), &db);
  if (!s.ok()) return storeError(s, "create snapshot staging store");
  return std::unique_ptr<SnapshotWriter>(
      new SnapshotWriter(impl, std::unique_ptr<leveldb::DB>(db)));
}

Status SnapshotWriter::add(uint64_t offset, std::string_view piece, uint32_t crc) {
  if (finished_ || !db_) return Error{Errc::kInvalid, "snapshot: piece after the last one"};
  if (offset != received_) {
    return Error{Errc::kInvalid, "snapshot: piece at offset " + std::to_string(offset) +
                                     ", expected " + std::to_string(received_)};
  }
  if (piece.size() > kMaxPiece) return Error{Errc::kInvalid, "snapshot: piece too large"};
  if (crc32c(piece.data(), piece.size()) != crc) {
    return Error{Errc::kCorruption, "snapshot: piece at offset " + std::to_string(offset) +
                                        " fails its checksum"};
  }
  // Check the whole piece before writing any of it.
  leveldb::WriteBatch batch;
  std::string_view last = lastKey_;
  uint64_t n = 0;
  size_t pos = 0;
  auto bad = [&](const char* why) {
    return Error{Errc::kCorruption, std::string("snapshot: ") + why + " at byte " +
                                        std::to_string(offset + pos)};
  };
  while (pos < piece.size()) {
    if (piece.size() - pos < 8) return bad("record header cut short");
    uint64_t klen = get32(&piece[pos]), vlen = get32(&piece[pos + 4]);
    if (klen == 0) return bad("empty key");
    if (klen + vlen > piece.size() - pos - 8) return bad("record cut short");
    std::string_view key = piece.substr(pos + 8, klen);
    std::string_view value = piece.substr(pos + 8 + klen, vlen);
    if (key <= last) return bad("keys out of order");  // `last` starts "": keys are not empty
    batch.Put(leveldb::Slice(key.data(), key.size()), leveldb::Slice(value.data(), value.size()));
    last = key;
    ++n;
    pos += 8 + klen + vlen;
  }
  leveldb::WriteOptions options;
  options.sync = true;
  if (leveldb::Status s = db_->Write(options, &batch); !s.ok()) {
    return storeError(s, "snapshot write");
  }
  if (n > 0) lastKey_ = std::string(last);
  records_ += n;
  received_ += piece.size();
  return Status();
}

Status SnapshotWriter::finish(uint64_t total, uint64_t appliedIndex) {
  if (finished_ || !db_) return Error{Errc::kInvalid, "snapshot: finished twice"};
  if (total != received_) {
    return Error{Errc::kInvalid, "snapshot: " + std::to_string(received_) + " bytes arrived of " +
                                     std::to_string(total)};
  }
  std::string bytes;
  leveldb::Status s = db_->Get(leveldb::ReadOptions(), keys::counter(keys::kApplied), &bytes);
  uint64_t applied = 0;
  if (s.ok()) {
    auto v = decodeU64(bytes);
    if (!v) return v.error();
    applied = *v;
  } else if (!s.IsNotFound()) {
    return storeError(s, "snapshot check");
  }
  if (applied != appliedIndex) {
    return Error{Errc::kInvalid, "snapshot: the store applied index " + std::to_string(applied) +
                                     ", the snapshot claims " + std::to_string(appliedIndex)};
  }
  db_.reset();  // closed: every piece was written with sync
  std::string staging = installPath(impl_.path);
  if (onDisk(impl_.env)) {
    // The pieces are synced, the names of the files holding them not necessarily.
    if (Status st = fsyncPath(staging); !st) return st;
  }
  if (Status st = renameStore(impl_.env, staging, readyPath(impl_.path)); !st) return st;
  finished_ = true;
  return Status();
}

// --- Namespace -----------------------------------------------------------------------------

Status Namespace::installSnapshot() {
  Impl& impl = *impl_;
  const std::string& path = impl.path;
  if (!exists(impl.env, readyPath(path))) {
    return Error{Errc::kNotFound, "no finished snapshot to install"};
  }
  impl.db.reset();
  if (Status s = removeStore(impl.env, oldPath(path)); !s) return s;
  if (Status s = renameStore(impl.env, path, oldPath(path)); !s) return s;
  if (Status s = renameStore(impl.env, readyPath(path), path); !s) return s;
  leveldb::DB* db = nullptr;
  leveldb::Status s = leveldb::DB::Open(storeOptions(impl.filter.get(), impl.env), path, &db);
  if (!s.ok()) return Error{Errc::kIo, "reopen namespace " + path + ": " + s.ToString()};
  impl.db.reset(db);
  // The new store is in place; a crash before this delete finishes it at the next open.
  if (Status r = removeStore(impl.env, oldPath(path)); !r) {
    log::warn("namespace: removing the replaced store: ", r.error().toString().c_str());
  }
  return Status();
}

void Namespace::discardSnapshot() {
  for (const std::string& stale : {installPath(impl_->path), readyPath(impl_->path)}) {
    if (Status s = removeStore(impl_->env, stale); !s) {
      log::warn("namespace: ", s.error().toString().c_str());
    }
  }
}

}  // namespace tessera::meta
