// replaceShard: the repair service rebuilt one shard of a chunk on another server; point the
// chunk descriptor at it. A compare-and-set: applied only if the chunk is still the one the
// copy was made from (same id, epoch and servers, no write lease held), so a write that began
// after the copy started (a lease grant bumps the epoch) or another move cancels the switch,
// and the rebuilt copy becomes an orphan instead of a silently stale shard.
#include <algorithm>

#include "fs/wire.h"
#include "meta/ns/ops/ops.h"

namespace tessera::meta::ops {

Result<Applied> replaceShard(Txn& txn, proto::Op::Reader op) {
  auto args = op.getReplaceShard();
  InodeId id(args.getInode());
  std::string key = keys::chunk(id, args.getIndex());
  auto bytes = txn.get(key);
  if (!bytes) return bytes.error();
  if (!*bytes) return err(Errc::kNotFound, "replaceShard: no chunk at", key.substr(1));
  auto chunk = decodeChunk(args.getIndex(), **bytes);
  if (!chunk) return chunk.error();
  auto stale = [&](const char* why) {
    return err(Errc::kStale, "replaceShard: chunk " + std::to_string(chunk->id.value), why);
  };
  if (chunk->id.value != args.getChunk()) return stale("was replaced");
  if (chunk->epoch != args.getEpoch()) return stale("was written since the copy started");
  if (chunk->leaseSession) return stale("is leased to a writer");
  auto expected = args.getServers();
  if (expected.size() != chunk->servers.size()) return stale("moved since the copy started");
  for (size_t i = 0; i < expected.size(); ++i) {
    if (chunk->servers[i].value != expected[i]) return stale("moved since the copy started");
  }
  unsigned shard = args.getShard();
  ServerId target(args.getTarget());
  if (shard >= chunk->servers.size()) return err(Errc::kInvalid, "replaceShard: shard index");
  if (!target) return err(Errc::kInvalid, "replaceShard: target server 0");
  if (std::find(chunk->servers.begin(), chunk->servers.end(), target) != chunk->servers.end()) {
    return err(Errc::kInvalid, "replaceShard: the target holds a shard of the chunk already");
  }
  // A server still ordered to delete its shards of this chunk would delete the new one too.
  auto garbage = txn.get(keys::garbage(chunk->id));
  if (!garbage) return garbage.error();
  if (*garbage) {
    auto g = decodeGarbage(chunk->id, **garbage);
    if (!g) return g.error();
    if (std::find(g->pending.begin(), g->pending.end(), target) != g->pending.end()) {
      return err(Errc::kBusy, "replaceShard: the target has not yet deleted an old shard");
    }
  }
  ServerId old = chunk->servers[shard];
  std::vector<ServerId> before = chunk->servers;
  chunk->servers[shard] = target;
  chunk->staleShards &= ~(1u << shard);
  txn.put(key, encode(*chunk));
  if (chunk->shared) {
    // Every file of a shared chunk names the same servers (meta/ns/ops/clone.cc): they all
    // switch to the rebuilt shard.
    auto refs = chunkRefs(txn, chunk->id);
    if (!refs) return refs.error();
    for (auto [inode, index] : *refs) {
      if (inode == id && index == args.getIndex()) continue;
      std::string otherKey = keys::chunk(inode, index);
      auto otherBytes = txn.get(otherKey);
      if (!otherBytes) return otherBytes.error();
      if (!*otherBytes) continue;
      auto other = decodeChunk(index, **otherBytes);
      if (!other) return other.error();
      if (other->id != chunk->id || other->servers != before) continue;
      other->servers[shard] = target;
      other->staleShards &= ~(1u << shard);
      txn.put(otherKey, encode(*other));
    }
  }
  // The old copy (if its server is still registered) is deleted through the garbage list.
  if (old) {
    auto known = txn.get(keys::server(old));
    if (!known) return known.error();
    if (*known) {
      if (Status s = addGarbage(txn, *chunk, old); !s) return s.error();
    }
  }
  return Applied{Attr{}, std::move(*chunk)};
}

}  // namespace tessera::meta::ops
