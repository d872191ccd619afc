// Namespace reads for the repair service: a walk over every chunk descriptor, and one chunk's
// garbage record.
#include "fs/log.h"
#include "meta/ns/keys.h"
#include "meta/ns/namespace.h"
#include "meta/ns/namespace_impl.h"
#include "meta/ns/records.h"
#include "meta/ns/txn.h"

namespace tessera::meta {

std::vector<Namespace::ChunkEntry> Namespace::scanChunks(InodeId inode, uint64_t index,
                                                         size_t max) {
  Txn txn(*impl_->db);
  std::vector<ChunkEntry> out;
  if (max == 0) return out;
  std::vector<std::pair<std::string, std::string>> raw;
  std::string prefix(1, char(keys::kChunk));
  Status s = txn.scan(prefix, keys::chunk(inode, index),
                      [&](std::string_view key, std::string_view value) {
                        raw.emplace_back(std::string(key), std::string(value));
                        return raw.size() < max;
                      });
  if (!s) log::error("namespace: scanChunks: ", s.error().toString().c_str());
  uint64_t cachedInode = 0, cachedSize = 0;
  for (auto& [key, value] : raw) {
    if (key.size() != keys::kIdPrefixLen + 8) {
      log::error("namespace: chunk key of wrong length");
      continue;
    }
    uint64_t ino = keys::readU64(key, 1);
    auto chunk = decodeChunk(keys::readU64(key, keys::kIdPrefixLen), value);
    if (!chunk) {
      log::error("namespace: ", chunk.error().toString().c_str());
      continue;
    }
    if (ino != cachedInode) {
      cachedInode = ino;
      auto rec = txn.inode(InodeId(ino));
      cachedSize = rec ? (*rec)->attr.size : 0;
    }
    out.push_back(ChunkEntry{InodeId(ino), cachedSize, std::move(*chunk)});
  }
  return out;
}

std::optional<GarbageOut> Namespace::garbageOf(ChunkId chunk) {
  Txn txn(*impl_->db);
  auto bytes = txn.get(keys::garbage(chunk));
  if (!bytes || !*bytes) return std::nullopt;
  auto g = decodeGarbage(chunk, **bytes);
  if (!g) return std::nullopt;
  return std::move(*g);
}

}  // namespace tessera::meta
