// fs/chunk_peers.h — connections to chunk servers by address ("HOST:PORT"), for the servers'
// own traffic: a chunk server reading a peer's shards to rebuild one, the meta leader ordering a
// rebuild. (Mounts resolve servers by id through the meta service: client/chunk_servers.h.)
// One connection per address, dialled on first use and shared by concurrent callers; a
// connection that breaks, or that a caller reports failed(), is dropped and dialled afresh on
// the next get().
// Not thread-safe: lives on one event loop, which the network and timer belong to.
#pragma once
#include <map>
#include <string>

#include <kj/async.h>
#include <kj/timer.h>

#include "fs/proto/chunk.capnp.h"
#include "fs/rpc.h"

namespace tessera {

class ChunkPeers {
 public:
  ChunkPeers(kj::Network& network, kj::Timer& timer, uint64_t connectTimeoutMs);

  // The service at `address`, connecting first if needed. kInvalid for a malformed address,
  // kUnavailable if nothing answers within the connect timeout.
  kj::Promise<Result<proto::ChunkService::Client>> get(const std::string& address);
  // A call to `address` failed in transport: drop its connection.
  void failed(const std::string& address);

 private:
  struct Entry {
    kj::Own<Connection> connection;
    kj::Maybe<proto::ChunkService::Client> service;
    kj::Maybe<kj::ForkedPromise<void>> connecting;
    bool inProgress = false;
    Error lastError;
    kj::Promise<void> watch = nullptr;
  };
  kj::Promise<void> connect(const std::string& address);

  kj::Network& network_;
  kj::Timer& timer_;
  uint64_t connectTimeoutMs_;
  std::map<std::string, Entry> peers_;
};

}  // namespace tessera
