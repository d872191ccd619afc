// meta/ns/txn.h — the view of the store that one op (or one read) works through.
//
// Writes stay in memory until commit(), which hands them to LevelDB as one WriteBatch: an op
// that fails halfway simply drops its Txn and the store is untouched. Reads see the op's own
// earlier writes, so an op can be written as a sequence of small steps.
//
// Inodes are cached: the first inode() call reads the record, later calls in the same Txn
// return the same object, and commit() writes back every cached inode whose encoding changed.
// An op that reaches one inode by two routes (a rename inside one directory, a hard link to the
// file being replaced) therefore never writes back a stale copy.
//
// Not thread-safe; lives for one apply() or one read on the meta server's event loop.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fs/result.h"
#include "meta/ns/keys.h"
#include "meta/ns/records.h"

namespace leveldb {
class DB;
class Iterator;
class Status;
}  // namespace leveldb

namespace tessera::meta {

// A LevelDB failure as our error: kCorruption for corrupt files, kIo for the rest.
Error storeError(const leveldb::Status& status, std::string_view what);

class Txn {
 public:
  explicit Txn(leveldb::DB& db);
  ~Txn();
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;

  // nullopt if the key does not exist; kIo/kCorruption if LevelDB cannot read it.
  Result<std::optional<std::string>> get(const std::string& key);
  void put(std::string key, std::string value);
  void erase(std::string key);

  // Calls fn(key, value) for each key that starts with `prefix` and is >= `from` (which starts
  // with `prefix`, or is empty for the whole prefix), in key order, until fn returns false.
  // fn must not write to this Txn.
  using ScanFn = std::function<bool(std::string_view key, std::string_view value)>;
  Status scan(std::string_view prefix, std::string_view from, const ScanFn& fn);
  // The first `limit` (key, value) pairs of a scan.
  Result<std::vector<std::pair<std::string, std::string>>> list(std::string_view prefix,
                                                                std::string_view from = {},
                                                                size_t limit = SIZE_MAX);

  // The cached inode; kNotFound if it does not exist (or was erased in this Txn).
  Result<Inode*> inode(InodeId id);
  // Whether the inode exists, without decoding it.
  Result<bool> hasInode(InodeId id);
  // Adds a new inode; the caller checked that its id is free.
  Inode* createInode(Inode inode);
  void eraseInode(InodeId id);

  // A counter's value, 0 if never set.
  Result<uint64_t> counter(keys::Counter c);
  Status addToCounter(keys::Counter c, int64_t delta);
  // Raises an id high-water mark to `id` if it is below.
  Status raiseMark(keys::Counter c, uint64_t id);

  // Writes everything as one batch. With `sync`, durable on return.
  Status commit(bool sync = false);

 private:
  struct CachedInode {
    Inode inode;
    std::string stored;  // its bytes in the store; empty for a new inode
    bool erased = false;
  };

  leveldb::DB& db_;
  // One iterator serves every scan of the Txn: creating one costs more than a seek, and the
  // store does not change under a Txn (its own writes wait in writes_ until commit).
  std::unique_ptr<leveldb::Iterator> it_;
  // Pending writes, nullopt meaning erase. Ordered, so commit writes a batch whose bytes depend
  // only on what the op did.
  std::map<std::string, std::optional<std::string>, std::less<>> writes_;
  std::map<uint64_t, CachedInode> inodes_;
};

}  // namespace tessera::meta
