// chunk/meta_link.h — the chunk server's link to the meta server: registration, heartbeats and
// the meta server's orders to delete chunks.
//
// Identity. DIR/server.id holds the id the meta server gave this data directory and the id of
// its cluster, as `key = value` lines:
//   id = 7
//   cluster = 3f2a...
// It is absent before the first registration (which then sends id 0 and an empty cluster id)
// and written atomically (write to a temporary file, rename) when registration returns an id.
// A meta server of another cluster answers kWrongCluster: that is fatal, the data belongs
// elsewhere.
//
// Outages. When a call fails or times out the link keeps the server serving data, logs one
// warning for the outage (not one per retry), reconnects with backoff and registers again; it
// logs again when the meta server is back. Chunks removed on the meta server's orders are
// reported in the next successful heartbeat, however long the outage.
//
// Not thread-safe: owned by the main event loop. The Disk, dialer and timer outlive it; the
// promises of start() and run() must be destroyed before it.
#pragma once
#include <kj/async-io.h>
#include <kj/timer.h>

#include <string>
#include <vector>

#include "chunk/disk.h"
#include "fs/options.h"
#include "fs/proto/meta.capnp.h"
#include "fs/rpc.h"

namespace tessera::chunk {

// How the link reaches the meta service. The production one opens a TCP connection; tests hand
// out an in-process capability.
class MetaDialer {
 public:
  virtual ~MetaDialer() noexcept(false) = default;
  // A capability to the meta service, or kUnavailable if nothing answered within `timeoutMs`.
  // Closes the connection of an earlier dial.
  virtual kj::Promise<Result<proto::MetaService::Client>> dial(uint64_t timeoutMs) = 0;
  // "HOST:PORT", for messages.
  virtual std::string address() const = 0;
};

class TcpMetaDialer final : public MetaDialer {
 public:
  TcpMetaDialer(kj::Network& network, kj::Timer& timer, Address address);
  kj::Promise<Result<proto::MetaService::Client>> dial(uint64_t timeoutMs) override;
  std::string address() const override { return address_.toString(); }

 private:
  kj::Network& network_;
  kj::Timer& timer_;
  Address address_;
  kj::Own<Connection> connection_;
};

class MetaLink {
 public:
  struct Config {
    std::string advertise;  // "HOST:PORT" where clients reach this server's ChunkService
    std::string site;
    std::string rack;
    std::string host;
    uint64_t heartbeatMs = 1000;
    uint64_t connectTimeoutMs = 10'000;  // for the first registration, by start()
    uint64_t callTimeoutMs = 5'000;      // for each later call
  };

  MetaLink(MetaDialer& dialer, kj::Timer& timer, Disk& disk, Config config);

  // Reads DIR/server.id and registers, retrying until connectTimeoutMs has passed. Resolves to
  // ok once registered and the identity saved; kWrongCluster at once if the meta server says
  // the data directory belongs to another cluster; kUnavailable "cannot reach meta server at
  // ADDR: ..." after the timeout; kCorruption if server.id is malformed; kIo if it cannot be
  // saved.
  kj::Promise<Status> start();
  // After start() succeeded: heartbeats every heartbeatMs, deletes the chunks the meta server
  // orders deleted, rides out outages (see above). Resolves only with a fatal Error
  // (kWrongCluster on registering again).
  kj::Promise<Status> run();

  ServerId id() const { return id_; }
  const std::string& clusterId() const { return clusterId_; }

 private:
  Status parseIdentity(const std::string& text);
  kj::Promise<Status> registerUntilDeadline(uint64_t backoffMs);
  kj::Promise<Status> connectAndRegister(uint64_t timeoutMs);
  kj::Promise<Status> registered(uint64_t id, std::string clusterId);
  kj::Promise<Status> heartbeat();
  kj::Promise<Status> step();
  void lost(const Error& e);
  void recovered();

  MetaDialer& dialer_;
  kj::Timer& timer_;
  Disk& disk_;
  Config config_;

  ServerId id_;
  std::string clusterId_;
  kj::Maybe<proto::MetaService::Client> client_;
  kj::TimePoint deadline_ = kj::origin<kj::TimePoint>();
  std::string startError_;  // what kept start() from registering, for its message
  bool needRegister_ = false;
  bool outage_ = false;
  uint64_t backoffMs_ = 0;
  std::vector<ChunkId> removed_;  // removed on orders, not yet reported
};

}  // namespace tessera::chunk
