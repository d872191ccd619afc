// client/chunk_servers.h — the client's connections to chunk servers, by server id. Addresses
// come from the meta server (a chunk server may come back on another port); a server that just
// failed is not redialled for a short while, so a degraded read does not wait on it again and
// again. Not thread-safe: lives on the client's event loop.
#pragma once
#include <functional>
#include <map>
#include <string>

#include <kj/async.h>
#include <kj/timer.h>

#include "fs/proto/chunk.capnp.h"
#include "fs/rpc.h"
#include "fs/types.h"

namespace tessera::client {

class ChunkServers {
 public:
  // Asks the meta server where server `id` listens.
  using Resolver = std::function<kj::Promise<Result<std::string>>(ServerId id)>;

  ChunkServers(kj::Network& network, kj::Timer& timer, Resolver resolver,
               uint64_t connectTimeoutMs);

  // The service of server `id`, connecting first if needed. kUnavailable if it cannot be
  // reached, or failed within the last `kRetryAfterMs`.
  kj::Promise<Result<proto::ChunkService::Client>> get(ServerId id);

  // Called after a call to `id` failed in transport: drop the connection and its address so
  // the next get() asks the meta server again.
  void failed(ServerId id);

  static constexpr uint64_t kRetryAfterMs = 1000;

 private:
  struct Entry {
    std::string address;
    kj::Own<Connection> connection;
    kj::Maybe<proto::ChunkService::Client> service;
    kj::Maybe<kj::ForkedPromise<void>> connecting;  // the latest attempt, maybe finished
    bool inProgress = false;
    kj::TimePoint failedAt = kj::origin<kj::TimePoint>();
    bool everFailed = false;
    kj::Promise<void> watch = nullptr;
  };
  kj::Promise<void> connect(ServerId id);

  kj::Network& network_;
  kj::Timer& timer_;
  Resolver resolver_;
  uint64_t connectTimeoutMs_;
  std::map<ServerId, Entry> servers_;
};

}  // namespace tessera::client
