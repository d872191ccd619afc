// chunk/shard_file.h — one shard of one chunk, stored as one file of 4 KiB blocks, each
// with its CRC32C. A block that fails its CRC is never returned: the read reports kCorruption
// and the client reads around it (parity or another replica). Blocking calls: they run on the
// Disk's worker thread only (chunk/disk.h). Not thread-safe.
//
// On-disk format, all integers little-endian:
//
//   [0, 4096)           header
//     0   8  magic "TSHARD01"
//     8   4  format version (1)
//     12  4  zero
//     16  8  chunk id
//     24  1  shard index
//     25  1  layout kind (0 ec, 1 replica)
//     26  1  layout k
//     27  1  layout m
//     28  4064 zero
//     4092 4 crc32c of bytes [0, 4092)
//   [4096, 69632)       CRC table: 16384 u32, entry i for data block i (bytes [4096 i, 4096 i
//                       + 4096) of the shard). entry = crc32c(block) XOR zeroBlockCrc(), so a
//                       hole (never written: 0) matches an all-zero block.
//   [69632, ...)        data: shard offset x lives at file offset 69632 + x.
//
// A lost block (markLost) holds fs/lost_block.h's pattern with the table entry ~crc32c(those bytes)
// XOR zeroBlockCrc(): an entry that fails the check on purpose, so a read fails as for any
// damaged block, but with kLost, not kCorruption: readers know its content is nowhere and do not
// decode it from the other shards (a decode of its torn row would be garbage). isLost() tells
// it from rot too.
//
// A shard holds at most kChunkSize (64 MiB) of data. Files stay sparse: an unwritten range
// takes no disk blocks and reads back as zeros with a valid CRC. Data beyond the end of the file
// reads as zeros; the table entries there are always zero (truncate clears them).
//
// Crash behaviour. A shard file is created whole: header written to NAME.tmp and renamed to
// NAME, so a running server never sees NAME without its header; a leftover NAME.tmp is
// deleted when the Disk starts. Creation is not synced (two fsyncs per shard of every new chunk
// would cost more than the write): the Disk syncs the file and its directory when the shard is
// first synced, and nothing is promised about a shard before that. A crash before then may
// leave NAME missing (a lost shard) or with a torn header (kCorruption, below) — both are
// what an unsynced shard may become, and both are read around like a missing shard. A write stores the data first, then the
// table entries; sync writes fdatasync afterwards. A crash (or an I/O error) between or during
// those writes can leave blocks whose data and table entry disagree. Those blocks read back as
// kCorruption — never as the mixed bytes — and a client treats them as a missing shard for
// that range, so they are rebuilt from the other shards; the next full write of such a block
// repairs it. A truncate clears the table entries beyond the new length, then cuts the data;
// a crash in between leaves the cut blocks reading as kCorruption in the same way; so does a
// punch (fallocate PUNCH_HOLE of a range), which clears the entries before it frees the data. A
// reservation (fallocate mode 0) changes no bytes: a crash during one loses at most the
// reservation, which the reply never acknowledged. A header
// that fails its magic, version or CRC, or names another shard, makes every operation on the
// shard kCorruption: the meta server replaces such a shard like a lost one.
#pragma once
#include <kj/array.h>
#include <kj/common.h>
#include <kj/io.h>

#include <cstdint>
#include <string>

#include "fs/result.h"
#include "fs/types.h"

namespace tessera::chunk {

// The widest layout Layout::valid() allows, ec(16,8), has 24 shards.
constexpr unsigned kMaxShards = 24;
constexpr uint64_t kBlocksPerShard = kChunkSize / kBlockSize;  // 16384
constexpr uint64_t kShardHeaderSize = 4096;
constexpr uint64_t kCrcTableOffset = kShardHeaderSize;
constexpr uint64_t kCrcTableSize = kBlocksPerShard * 4;  // 64 KiB
constexpr uint64_t kDataOffset = kCrcTableOffset + kCrcTableSize;
constexpr uint32_t kShardFormatVersion = 1;

// Which shard: a chunk id and a shard index (0 .. k + m - 1).
struct ShardKey {
  ChunkId chunk;
  uint8_t shard = 0;

  // "00000000000000ab.2": also the file name.
  std::string toString() const;
  friend bool operator==(const ShardKey&, const ShardKey&) = default;
};

// kInvalid unless offset and length are multiples of 4 KiB and offset + length <= kChunkSize.
Status checkRange(uint64_t offset, uint64_t length);
// kInvalid unless `crcs` has one entry per block of `data` (and `data` is whole blocks);
// kCorruption naming the first block of `data` whose CRC32C differs from its entry.
// `offset` (of data within the shard) only names the block in the message.
Status verifyBlocks(uint64_t offset, kj::ArrayPtr<const kj::byte> data,
                    kj::ArrayPtr<const uint32_t> crcs);

class ShardFile {
 public:
  // Opens an existing shard file. kNotFound if it does not exist; kCorruption if its header is
  // damaged or names another shard; kIo for other failures.
  static Result<ShardFile> open(const std::string& path, ShardKey key);
  // Creates the shard file with an empty data region (see the crash notes above). kExists if
  // `path` exists already; kInvalid for a bad layout.
  static Result<ShardFile> create(const std::string& path, ShardKey key, Layout layout);
  // fsync of a directory, so the entries created in it survive a crash.
  static Status syncDirectory(const std::string& dir);
  static std::string directoryOf(const std::string& path);

  ShardFile(ShardFile&&) = default;
  ShardFile& operator=(ShardFile&&) = default;

  ShardKey key() const { return key_; }
  const Layout& layout() const { return layout_; }

  // Stores whole blocks at `offset` after checking each against `crcs` (see verifyBlocks):
  // on kInvalid or kCorruption nothing is written. kNoSpace / kIo from the file system.
  Status write(uint64_t offset, kj::ArrayPtr<const kj::byte> data,
               kj::ArrayPtr<const uint32_t> crcs);
  // Reads out.size() bytes at `offset` into `out` and the CRC32C of each block into `crcs`
  // (out.size() / 4096 entries). Every block is checked against its table entry first: the
  // first bad block is named, kCorruption for rot, kLost for a block marked lost (markLost), and
  // `out` is zeroed on any error. With
  // `lostAsStored`, a lost block (markLost) reads as the pattern it holds, with that pattern's
  // CRC, instead of failing: for a writer that encodes parity over the stored bytes.
  Status read(uint64_t offset, kj::ArrayPtr<kj::byte> out, kj::ArrayPtr<uint32_t> crcs,
              bool lostAsStored = false);
  // Cuts the data to `length` bytes (a multiple of 4 KiB) and clears the CRCs beyond it.
  Status truncate(uint64_t length);
  // Frees [offset, offset + length) (multiples of 4 KiB): the blocks read as zeros afterwards
  // and take no disk space (fallocate PUNCH_HOLE; written zeros where the file system cannot
  // punch). Their CRC entries are cleared first — a crash in between leaves blocks that read
  // as kCorruption, as after a torn write. Not synced.
  Status punch(uint64_t offset, uint64_t length);
  // Reserves disk space for [offset, offset + length) (multiples of 4 KiB, inside
  // shardCapacity() of the shard's layout, else kInvalid): fallocate mode 0 of those blocks and
  // of their CRC table entries, so that writing them later cannot fail for lack of space. The
  // bytes and CRCs stay as they are: blocks never written still read as zeros (the table
  // entries are zeros too). The file grows to cover the range (never KEEP_SIZE: blocks past the
  // end of the file would escape truncate and punch). kNoSpace when the file system has no room
  // for all of it: then the ranges that were holes before the call are punched again, so a
  // refused reservation leaves the file as it was (where FIEMAP is not supported, which holes
  // were there is unknown and what was taken stays taken); kNotSupported if the file system
  // cannot reserve. Returns the disk bytes the file took on. Not synced.
  Result<uint64_t> reserve(uint64_t offset, uint64_t length);
  // Marks [offset, offset + length) (multiples of 4 KiB) lost: blocks whose content is known
  // nowhere (a rebuild found their row holding a mix of two writes: chunk/rebuilder.h). They
  // read as kLost until the next write of each replaces it. Not synced.
  Status markLost(uint64_t offset, uint64_t length);
  // Whether the block at `offset` is marked lost (false for a block that reads fine or rotted).
  Result<bool> isLost(uint64_t offset);
  // fdatasync.
  Status sync();

  // Bytes of disk the file takes (st_blocks * 512), as of the last write or truncate.
  uint64_t allocatedBytes() const { return allocated_; }

 private:
  ShardFile(kj::AutoCloseFd fd, std::string path, ShardKey key, Layout layout);
  Error ioError(const char* what, int err) const;
  void refreshAllocated();

  kj::AutoCloseFd fd_;
  std::string path_;
  ShardKey key_;
  Layout layout_;
  uint64_t allocated_ = 0;
};

}  // namespace tessera::chunk

template <>
struct std::hash<tessera::chunk::ShardKey> {
  size_t operator()(const tessera::chunk::ShardKey& k) const noexcept {
    return std::hash<uint64_t>()(k.chunk.value * 31 + k.shard);
  }
};
