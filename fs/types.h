// fs/types.h — value types shared by every component: strong ids, attributes, layouts and chunk
// descriptors. Plain copyable values; fs/wire.h converts them to and from Cap'n Proto.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "fs/result.h"

namespace tessera {

// A 64-bit id that does not mix with other kinds of id.
template <typename Tag>
struct Id {
  uint64_t value = 0;
  constexpr Id() = default;
  constexpr explicit Id(uint64_t v) : value(v) {}
  constexpr explicit operator bool() const { return value != 0; }
  friend constexpr auto operator<=>(Id, Id) = default;
};

using InodeId = Id<struct InodeTag>;
using ChunkId = Id<struct ChunkTag>;
using ServerId = Id<struct ServerTag>;
using SessionId = Id<struct SessionTag>;

constexpr InodeId kRootInode{1};

// Fixed geometry of the data path.
constexpr uint64_t kBlockSize = 4096;              // one CRC32C each
constexpr uint64_t kCellSize = 64 * 1024;          // ec(k,m) stripe unit per data shard
constexpr uint64_t kChunkSize = 64 * 1024 * 1024;  // logical bytes of a file per chunk
constexpr uint64_t kMaxGetChunks = 1024;  // chunk indices one getChunks call looks at, at most
constexpr uint64_t kMaxPunchChunks = 4096;  // chunk indices one punchChunks call drops, at most
constexpr uint64_t kMaxCloneChunks = 4096;  // chunk indices one clone call covers, at most
constexpr uint64_t kMaxUsageChunks = 4096;  // chunks one commitWrite reports MiBs of, at most
constexpr uint64_t kUsageUnit = 1 << 20;    // st_blocks counts written MiBs (ChunkDesc.written)
constexpr size_t kMaxNameLen = 255;
constexpr size_t kMaxXattrValue = 64 * 1024;

// How a chunk is spread: ec(k,m) or replica(n) (stored as k = 1, m = n - 1).
struct Layout {
  enum class Kind : uint8_t { kEc = 0, kReplica = 1 };
  Kind kind = Kind::kEc;
  uint8_t k = 4;
  uint8_t m = 2;

  static Layout ec(uint8_t k, uint8_t m) { return Layout{Kind::kEc, k, m}; }
  static Layout replica(uint8_t n) { return Layout{Kind::kReplica, 1, uint8_t(n - 1)}; }
  // "ec(4,2)", "replica(3)"; whitespace around the numbers is allowed. Bounds: ec with
  // 1 <= k <= 16 and 1 <= m <= 8; replica with 1 <= n <= 8.
  static Result<Layout> parse(std::string_view text);

  int shards() const { return k + m; }
  bool isEc() const { return kind == Kind::kEc; }
  std::string toString() const;
  bool valid() const;
  friend bool operator==(const Layout&, const Layout&) = default;
};

// The most bytes one shard of a full chunk holds: for ec(k,m) a cell for every stripe the chunk
// starts (the last one may be partial: ec(3,2) has 342 rows, so 342 cells), for replicas the
// whole chunk. A multiple of 4 KiB.
inline uint64_t shardCapacity(const Layout& layout) {
  if (!layout.isEc() || layout.k == 0) return kChunkSize;
  uint64_t row = kCellSize * layout.k;
  return (kChunkSize + row - 1) / row * kCellSize;
}

struct Attr {
  InodeId inode;
  uint32_t mode = 0;
  uint32_t nlink = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t rdev = 0;
  uint64_t size = 0;
  uint64_t blocks = 0;
  int64_t atimeNs = 0;
  int64_t mtimeNs = 0;
  int64_t ctimeNs = 0;
  bool readOnly = false;  // frozen (tessera.readonly): no change but unfreezing is allowed
};

struct ChunkDesc {
  uint64_t index = 0;
  ChunkId id;
  uint64_t version = 0;
  Layout layout;
  std::vector<ServerId> servers;  // servers[i] holds shard i
  uint64_t epoch = 0;             // of the last write lease granted (fs/proto/common.capnp)
  SessionId leaseSession;         // holder of the write lease; 0: none
  uint32_t staleShards = 0;       // bit i: shard i missed writes, rebuild before reading it
  bool resync = false;            // the last holder let go uncleanly: re-sync before writing
  bool shared = false;            // in more than one file (a clone): copied before a write
  uint64_t written = 0;           // bit i: MiB i holds written data (st_blocks counts these)

  bool stale(int shard) const { return (staleShards >> shard) & 1u; }
};

// A chunk server's identity token: random, made once per data directory before its first
// registration (chunk/meta_link.h), so the meta cluster recognizes a retried registration.
constexpr size_t kMinServerTokenLen = 16;
constexpr size_t kMaxServerTokenLen = 128;
// kInvalid unless `token` has kMinServerTokenLen to kMaxServerTokenLen printable ASCII
// characters other than space.
Status checkServerToken(std::string_view token);

}  // namespace tessera

template <typename Tag>
struct std::hash<tessera::Id<Tag>> {
  size_t operator()(tessera::Id<Tag> id) const noexcept { return std::hash<uint64_t>()(id.value); }
};
