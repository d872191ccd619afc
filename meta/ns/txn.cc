#include "meta/ns/txn.h"

#include <leveldb/db.h>
#include <leveldb/write_batch.h>

#include <memory>

namespace tessera::meta {
namespace {

std::string_view view(const leveldb::Slice& s) { return std::string_view(s.data(), s.size()); }

}  // namespace

Error storeError(const leveldb::Status& status, std::string_view what) {
  return Error{status.IsCorruption() ? Errc::kCorruption : Errc::kIo,
               std::string(what) + ": " + status.ToString()};
}

Txn::Txn(leveldb::DB& db) : db_(db) {}
Txn::~Txn() = default;

Result<std::optional<std::string>> Txn::get(const std::string& key) {
  if (auto w = writes_.find(key); w != writes_.end()) return w->second;
  std::string value;
  leveldb::Status s = db_.Get(leveldb::ReadOptions(), key, &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return storeError(s, "read");
  return std::optional<std::string>(std::move(value));
}

void Txn::put(std::string key, std::string value) {
  writes_.insert_or_assign(std::move(key), std::move(value));
}

void Txn::erase(std::string key) { writes_.insert_or_assign(std::move(key), std::nullopt); }

Status Txn::scan(std::string_view prefix, std::string_view from, const ScanFn& fn) {
  std::string start(from.empty() ? prefix : from);
  if (!it_) it_.reset(db_.NewIterator(leveldb::ReadOptions()));
  leveldb::Iterator* it = it_.get();
  it->Seek(start);
  auto w = writes_.lower_bound(start);
  // Merge the store with this Txn's writes; where both have a key, the write wins.
  while (true) {
    bool inStore = it->Valid() && view(it->key()).starts_with(prefix);
    bool inWrites = w != writes_.end() && std::string_view(w->first).starts_with(prefix);
    if (!inStore && !inWrites) break;
    int order = !inStore ? 1 : !inWrites ? -1 : view(it->key()).compare(w->first);
    if (order < 0) {
      if (!fn(view(it->key()), view(it->value()))) return Status();
      it->Next();
      continue;
    }
    if (order == 0) it->Next();
    if (w->second && !fn(w->first, *w->second)) return Status();
    ++w;
  }
  if (!it->status().ok()) return storeError(it->status(), "scan");
  return Status();
}

Result<std::vector<std::pair<std::string, std::string>>> Txn::list(std::string_view prefix,
                                                                   std::string_view from,
                                                                   size_t limit) {
  std::vector<std::pair<std::string, std::string>> out;
  if (limit == 0) return out;
  Status s = scan(prefix, from, [&](std::string_view k, std::string_view v) {
    out.emplace_back(k, v);
    return out.size() < limit;
  });
  if (!s) return s.error();
  return out;
}

Result<Inode*> Txn::inode(InodeId id) {
  if (auto c = inodes_.find(id.value); c != inodes_.end()) {
    if (c->second.erased) return Error{Errc::kNotFound, "inode " + std::to_string(id.value)};
    return &c->second.inode;
  }
  auto bytes = get(keys::inode(id));
  if (!bytes) return bytes.error();
  if (!*bytes) return Error{Errc::kNotFound, "inode " + std::to_string(id.value)};
  auto decoded = decodeInode(id, **bytes);
  if (!decoded) return decoded.error();
  auto& slot = inodes_[id.value];
  slot.inode = std::move(*decoded);
  slot.stored = std::move(**bytes);
  return &slot.inode;
}

Result<bool> Txn::hasInode(InodeId id) {
  if (auto c = inodes_.find(id.value); c != inodes_.end()) return !c->second.erased;
  auto bytes = get(keys::inode(id));
  if (!bytes) return bytes.error();
  return bytes->has_value();
}

Inode* Txn::createInode(Inode inode) {
  auto& slot = inodes_[inode.id().value];
  slot = CachedInode{std::move(inode), {}, false};
  return &slot.inode;
}

void Txn::eraseInode(InodeId id) {
  inodes_[id.value].erased = true;
  writes_[keys::inode(id)] = std::nullopt;
}

Result<uint64_t> Txn::counter(keys::Counter c) {
  auto bytes = get(keys::counter(c));
  if (!bytes) return bytes.error();
  if (!*bytes) return uint64_t(0);
  return decodeU64(**bytes);
}

Status Txn::addToCounter(keys::Counter c, int64_t delta) {
  auto value = counter(c);
  if (!value) return value.error();
  // A count going below zero means the store disagrees with itself; keep it at zero rather than
  // wrap, the count is only reported, never used to decide anything.
  uint64_t next = delta < 0 && *value < uint64_t(-delta) ? 0 : *value + uint64_t(delta);
  put(keys::counter(c), keys::u64Value(next));
  return Status();
}

Status Txn::raiseMark(keys::Counter c, uint64_t id) {
  auto value = counter(c);
  if (!value) return value.error();
  if (id > *value) put(keys::counter(c), keys::u64Value(id));
  return Status();
}

Status Txn::commit(bool sync) {
  for (auto& [id, cached] : inodes_) {
    if (cached.erased) continue;  // eraseInode() queued the delete
    std::string bytes = encode(cached.inode);
    if (bytes != cached.stored)
      writes_.insert_or_assign(keys::inode(InodeId(id)), std::move(bytes));
  }
  it_.reset();  // it pins memtables and files the write may retire
  leveldb::WriteBatch batch;
  for (auto& [key, value] : writes_) {
    if (value)
      batch.Put(key, *value);
    else
      batch.Delete(key);
  }
  leveldb::WriteOptions options;
  options.sync = sync;
  leveldb::Status s = db_.Write(options, &batch);
  if (!s.ok()) return storeError(s, "write");
  writes_.clear();
  inodes_.clear();
  return Status();
}

}  // namespace tessera::meta
