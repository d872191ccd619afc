// client/chunk_servers.h — the client's connections to chunk servers, by server id. Before
// dialling, the meta server says where a server listens and whether it is up: a server the meta
// server knows to be down is not dialled at all, one that came back (on a new port) is dialled
// at once, and one that just failed at the address the meta server still gives is not redialled
// for a second, so a degraded read does not wait on it again and again.
// Not thread-safe: lives on the client's event loop.
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
  struct Location {
    std::string address;
    bool up = false;
  };
  // Asks the meta server where server `id` listens and whether it is up.
  using Resolver = std::function<kj::Promise<Result<Location>>(ServerId id)>;

  ChunkServers(kj::Network& network, kj::Timer& timer, Resolver resolver,
               uint64_t connectTimeoutMs);

  // The service of server `id`, connecting first if needed. kUnavailable if the meta server
  // says it is down, if it cannot be reached, or if it failed at the same address within the
  // last `kRetryAfterMs`.
  kj::Promise<Result<proto::ChunkService::Client>> get(ServerId id);

  // Called after a call to `id` made on `used` (a service get() returned) failed with `why`:
  // drop that connection and its address so the next get() asks the meta server again. A late
  // failure of a call made on an earlier connection leaves the current one alone.
  void failed(ServerId id, proto::ChunkService::Client& used, const kj::Exception& why);

  static constexpr uint64_t kRetryAfterMs = 1000;

 private:
  struct Entry {
    std::string address;         // of the current connection
    std::string failedAddress;   // where the last attempt or connection failed
    kj::Own<Connection> connection;
    kj::Maybe<proto::ChunkService::Client> service;
    kj::Maybe<kj::ForkedPromise<void>> connecting;  // the latest attempt, maybe finished
    bool inProgress = false;
    Error lastError;
    kj::TimePoint failedAt = kj::origin<kj::TimePoint>();
    kj::Promise<void> watch = nullptr;
  };
  kj::Promise<void> connect(ServerId id);
  // Forgets the connection to `id` and the address it had (see failed()).
  void drop(ServerId id);

  kj::Network& network_;
  kj::Timer& timer_;
  Resolver resolver_;
  uint64_t connectTimeoutMs_;
  std::map<ServerId, Entry> servers_;
};

}  // namespace tessera::client
