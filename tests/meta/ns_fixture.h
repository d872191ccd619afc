// tests/meta/ns_fixture.h — a meta::Namespace on a fresh store, in memory or on disk, with one
// helper per op so a test reads as the operations it performs.
#pragma once
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fs/proto/meta.capnp.h"
#include "fs/types.h"
#include "meta/ns/namespace.h"
#include "tests/support/temp_dir.h"

namespace leveldb {
class DB;
class Env;
}  // namespace leveldb

namespace tessera::test {

enum class StoreKind { kMemory, kDisk };

// Runs the enclosing test case twice: once as SUBCASE "in memory" (leveldb::NewMemEnv) and
// once as SUBCASE "on disk" (real LevelDB in a TempDir).
StoreKind eachStoreKind();

struct SetAttr {
  uint32_t valid = 0;
  uint32_t mode = 0, uid = 0, gid = 0;
  uint64_t size = 0;
  int64_t atimeNs = 0, mtimeNs = 0;
};

class NsFixture {
 public:
  explicit NsFixture(StoreKind kind);
  ~NsFixture();

  meta::Namespace& ns() { return *ns_; }
  StoreKind kind() const { return kind_; }

  // Closes the store and opens it again, as after a restart.
  void reopen();
  // Runs `fn` on the raw LevelDB with the namespace closed, then reopens the namespace.
  void withRawDb(const std::function<void(leveldb::DB&)>& fn);
  // Runs `fn` with the namespace closed (to damage or rearrange its files), then reopens it.
  void withClosed(const std::function<void()>& fn);
  // Where the store lives, and its env (nullptr on disk).
  const std::string& path() const { return path_; }
  leveldb::Env* env() { return env_.get(); }
  // Every key and value in the store, in key order.
  std::vector<std::pair<std::string, std::string>> dump();

  // The op's time: every apply() sets nowNs to ++clock.
  int64_t clock = 1'000'000;
  // The id the next mknod() gets.
  uint64_t nextInode = 2;

  // Applies an op filled by `fill` (after nowNs is set).
  Result<meta::Applied> apply(const std::function<void(proto::Op::Builder)>& fill);
  // Applies a serialized op as it is (the determinism test replays these).
  Result<meta::Applied> applyBytes(const std::string& flat);

  Status init(Layout rootPolicy = Layout::ec(4, 2), std::string clusterId = "test-cluster");
  Result<Attr> mknod(InodeId parent, std::string_view name, uint32_t mode, uint64_t session = 0,
                     std::string_view target = {}, uint32_t rdev = 0);
  Result<Attr> mkdir(InodeId parent, std::string_view name, uint32_t perm = 0755) {
    return mknod(parent, name, S_IFDIR | perm);
  }
  Result<Attr> create(InodeId parent, std::string_view name, uint64_t session = 0) {
    return mknod(parent, name, S_IFREG | 0644, session);
  }
  Result<Attr> symlink(InodeId parent, std::string_view name, std::string_view target) {
    return mknod(parent, name, S_IFLNK | 0777, 0, target);
  }
  Result<Attr> link(InodeId inode, InodeId newParent, std::string_view newName);
  Status unlink(InodeId parent, std::string_view name);
  Status rmdir(InodeId parent, std::string_view name);
  Status rename(InodeId parent, std::string_view name, InodeId newParent, std::string_view newName,
                uint32_t flags = 0);
  Result<Attr> setattr(InodeId inode, const SetAttr& set);
  Status setxattr(InodeId inode, std::string_view name, std::string_view value, uint32_t flags = 0);
  Status removexattr(InodeId inode, std::string_view name);
  Result<Attr> open(uint64_t session, InodeId inode);
  Status release(uint64_t session, InodeId inode);
  // A chunk of `layout` on servers 1..k+m unless `servers` is given.
  Result<ChunkDesc> allocChunk(InodeId inode, uint64_t index, uint64_t chunkId,
                               Layout layout = Layout::ec(4, 2),
                               std::optional<std::vector<uint64_t>> servers = std::nullopt);
  // `usage`: (chunk index, MiBs written, MiBs punched) as ChunkDesc.written bits.
  struct Usage {
    uint64_t index = 0, set = 0, clear = 0;
  };
  Result<Attr> commitWrite(InodeId inode, uint64_t size, int64_t mtimeNs,
                           const std::vector<Usage>& usage = {});
  Status openSession(uint64_t session, std::string_view host, std::string_view mountpoint);
  Status registerServer(uint64_t id, std::string_view address, std::string_view site = "s1",
                        std::string_view rack = "r1", std::string_view host = "h1");
  // A registration as the meta leader proposes it: `newId` when it gave `id` to a server that
  // asked for one. The result's `server` is the id the server has.
  Result<meta::Applied> registerServerWithToken(uint64_t id, std::string_view address,
                                                std::string_view token, bool newId);
  Status removed(uint64_t server, const std::vector<uint64_t>& chunks);

  // Shorthands that REQUIRE success.
  InodeId mkdirOk(InodeId parent, std::string_view name);
  InodeId createOk(InodeId parent, std::string_view name, uint64_t session = 0);
  Attr attr(InodeId inode);
  // The error code of a lookup, or kOk.
  Errc lookupCode(InodeId parent, std::string_view name);
  // Every name in a directory (without "." and ".."), read in pages of `page`.
  std::vector<std::string> names(InodeId dir, uint32_t page = 1000);

 private:
  void open();
  void close();

  StoreKind kind_;
  std::unique_ptr<leveldb::Env> env_;  // in memory only
  std::optional<TempDir> dir_;         // on disk only
  std::string path_;
  std::unique_ptr<meta::Namespace> ns_;
};

// A store of the enclosing subcase's kind (see eachStoreKind), initialized.
std::unique_ptr<NsFixture> eachStore();

}  // namespace tessera::test
