// setServerState: an operator drains a chunk server (its shards move off through repair, and
// placement sends nothing new there) or removes one that holds nothing any more.
#include <algorithm>

#include "meta/ns/ops/ops.h"

namespace tessera::meta::ops {

namespace {

// Whether any chunk descriptor or garbage record names `server`. A scan of the whole chunk map:
// removing a server is a rare admin act, and the answer must come from the store itself.
Result<bool> named(Txn& txn, ServerId server) {
  bool found = false;
  Status bad;
  Status s = txn.scan(std::string(1, char(keys::kChunk)), {},
                      [&](std::string_view key, std::string_view value) {
                        if (key.size() != keys::kIdPrefixLen + 8) return true;
                        auto chunk = decodeChunk(keys::readU64(key, keys::kIdPrefixLen), value);
                        if (!chunk) {
                          bad = chunk.error();
                          return false;
                        }
                        found = std::find(chunk->servers.begin(), chunk->servers.end(), server) !=
                                chunk->servers.end();
                        return !found;
                      });
  if (!s) return s.error();
  if (!bad) return bad.error();
  if (found) return true;
  s = txn.scan(keys::garbages(), {}, [&](std::string_view key, std::string_view value) {
    if (key.size() != keys::kIdPrefixLen) return true;
    auto g = decodeGarbage(ChunkId(keys::readU64(key, 1)), value);
    if (!g) {
      bad = g.error();
      return false;
    }
    found = std::find(g->pending.begin(), g->pending.end(), server) != g->pending.end();
    return !found;
  });
  if (!s) return s.error();
  if (!bad) return bad.error();
  return found;
}

}  // namespace

Result<Applied> setServerState(Txn& txn, proto::Op::Reader op) {
  auto args = op.getSetServerState();
  ServerId id(args.getServer());
  std::string key = keys::server(id);
  auto bytes = txn.get(key);
  if (!bytes) return bytes.error();
  if (!*bytes) return err(Errc::kNotFound, "no chunk server", std::to_string(id.value));
  auto server = decodeServer(id, **bytes);
  if (!server) return server.error();
  if (args.getRemove()) {
    auto busy = named(txn, id);
    if (!busy) return busy.error();
    if (*busy) {
      return err(Errc::kNotEmpty, "chunk server " + std::to_string(id.value) +
                                  " still holds shards; drain it first");
    }
    txn.erase(key);
    return Applied{};
  }
  server->draining = args.getDraining();
  txn.put(key, encode(*server));
  return Applied{};
}

}  // namespace tessera::meta::ops
