#include "chunk/inventory.h"

#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "fs/rpc.h"
#include "fs/wire.h"

namespace tessera::chunk {

Result<std::vector<ShardKey>> listShardFiles(const std::string& shardsDir) {
  std::vector<ShardKey> out;
  for (unsigned b = 0; b < 256; ++b) {
    char bucket[4];
    snprintf(bucket, sizeof bucket, "%02x", b);
    std::string path = shardsDir + "/" + bucket;
    DIR* d = ::opendir(path.c_str());
    if (!d) {
      if (errno == ENOENT) continue;
      return Error{Errc::kIo, "cannot read " + path + ": " + strerror(errno)};
    }
    while (struct dirent* e = ::readdir(d)) {
      auto key = parseShardName(e->d_name);
      if (key) out.push_back(*key);
    }
    ::closedir(d);
  }
  return out;
}

namespace {

kj::Promise<Status> sendPieces(proto::MetaService::Client meta, ServerId id,
                               kj::Own<std::vector<ShardKey>> keys, size_t from,
                               kj::Timer& timer, uint64_t timeoutMs) {
  size_t n = std::min(kInventoryPiece, keys->size() - from);
  auto req = meta.reportInventoryRequest();
  req.setServer(id.value);
  req.setStart(from == 0);
  req.setDone(from + n == keys->size());
  auto list = req.initShards(n);
  for (size_t i = 0; i < n; ++i) {
    list[i].setChunk((*keys)[from + i].chunk.value);
    list[i].setShard((*keys)[from + i].shard);
  }
  using Response = capnp::Response<proto::MetaService::ReportInventoryResults>;
  return withTimeout(timer, timeoutMs, kj::Promise<Response>(req.send()))
      .then(
          [meta, id, keys = kj::mv(keys), from, n, &timer,
           timeoutMs](Response r) mutable -> kj::Promise<Status> {
            if (auto s = fromWire(r.getError()); !s) return s;
            if (from + n == keys->size()) return Status();
            return sendPieces(kj::mv(meta), id, kj::mv(keys), from + n, timer, timeoutMs);
          },
          [](kj::Exception&& e) -> kj::Promise<Status> {
            return Status(errorFromException(e, "reportInventory"));
          });
}

}  // namespace

kj::Promise<Status> sendInventory(proto::MetaService::Client meta, ServerId id, DiskSet& disk,
                                  kj::Timer& timer, uint64_t timeoutMs) {
  return disk.list().then([meta = kj::mv(meta), id, &timer, timeoutMs](
                              Result<std::vector<ShardKey>> keys) mutable -> kj::Promise<Status> {
    if (!keys) return Status(keys.error());
    return sendPieces(kj::mv(meta), id, kj::heap(kj::mv(*keys)), 0, timer, timeoutMs);
  });
}

}  // namespace tessera::chunk
