// chunk/meta_link.h — the chunk server's link to the meta cluster (3 or 5 Raft replicas, or one
// server): registration, heartbeats and the meta leader's orders to delete chunks.
//
// Identity. DIR/server.id (in every data directory, chunk/disk_set.h) holds the id the meta
// cluster gave this data directory and the id of its cluster, as `key = value` lines:
//   id = 7
//   cluster = 3f2a...
// It is absent before the first registration (which then sends id 0 and an empty cluster id)
// and written atomically (write to a temporary file, rename) when registration returns an id.
// A meta server of another cluster answers kWrongCluster: that is fatal, the data belongs
// elsewhere.
// DIR/server.token holds one line, the data directory's identity token: 32 random hex digits,
// made and written atomically and durably (fsync of file and directory) before the first
// registration if absent (also in directories of older versions that have only server.id), and
// sent with every registration. The meta leader answers a registration without an id but with a
// token it knows with that token's id, so a first registration that is retried (its answer
// timed out, or its leader lost leadership after committing it), even across a restart of this
// server, never gets a second id. A crash before the token is durable leaves no file (or a
// stale server.token.tmp, ignored): the next start makes a new one, and nothing was sent yet.
//
// Finding the leader, as the client's link does. The link talks to one meta server at a time,
// the current one (at first the first address):
//   - kNotLeader with a leader hint "HOST:PORT": the hint becomes current (added to the list if
//     unknown) and the exchange is tried there at once. Immediate retries are limited (one per
//     address and one more), so servers with stale hints cannot make the link spin; a hint
//     naming the server the link last failed to reach is ignored, as stale.
//   - kNotLeader without a hint (an election), a failed connection or call, a timeout: the next
//     address becomes current (round robin), tried after the backoff.
// Soft state. The leader keeps each chunk server's liveness and capacity in memory only; a new
// leader learns them from the chunk servers. So the link registers again (same id, same
// cluster) with every meta server it moves to, before heartbeating there, and whenever a
// heartbeat answers kNotFound (the leader does not know this server).
//
// Outages. When no leader accepts a heartbeat or registration the link keeps the server
// serving data, logs one warning for the outage (not one per retry), retries with backoff
// (kFirstBackoffMs doubling to kMaxBackoffMs) and logs again when a leader accepts it. Chunks
// removed on the leader's orders are reported in the next successful heartbeat, however long
// the outage.
//
// Disks. Heartbeats carry each data directory's state and the shards lost on disks that failed
// (DiskSet::lostShards()), all of them again to every leader the link registers with.
//
// Not thread-safe: owned by the main event loop. The DiskSet, dialer and timer outlive it; the
// promises of start() and run() must be destroyed before it.
#pragma once
#include <kj/async-io.h>
#include <kj/timer.h>

#include <string>
#include <vector>

#include "chunk/disk_logs.h"
#include "chunk/disk_set.h"
#include "chunk/scrubber.h"
#include "fs/options.h"
#include "fs/proto/meta.capnp.h"
#include "fs/rpc.h"

namespace tessera::chunk {

// How the link reaches a meta server. The production one opens a TCP connection; tests hand out
// in-process capabilities.
class MetaDialer {
 public:
  virtual ~MetaDialer() noexcept(false) = default;
  // A capability to the meta service at `address`, or kUnavailable (or kTimedOut) if nothing
  // answered within `timeoutMs`. Closes the connection of an earlier dial.
  virtual kj::Promise<Result<proto::MetaService::Client>> dial(const Address& address,
                                                               uint64_t timeoutMs) = 0;
};

class TcpMetaDialer final : public MetaDialer {
 public:
  TcpMetaDialer(kj::Network& network, kj::Timer& timer);
  kj::Promise<Result<proto::MetaService::Client>> dial(const Address& address,
                                                       uint64_t timeoutMs) override;

 private:
  kj::Network& network_;
  kj::Timer& timer_;
  kj::Own<Connection> connection_;
};

class MetaLink {
 public:
  struct Config {
    std::vector<Address> meta;  // the meta servers, at least one
    std::string advertise;      // "HOST:PORT" where clients reach this server's ChunkService
    std::string site;
    std::string rack;
    std::string host;
    uint64_t heartbeatMs = 1000;
    uint64_t connectTimeoutMs = 10'000;  // for the first registration, by start()
    uint64_t callTimeoutMs = 5'000;      // for each connection and each call
    uint64_t inventoryMs = 600'000;      // full inventory report (chunk/inventory.h) this often
  };
  static constexpr uint64_t kFirstBackoffMs = 100;
  static constexpr size_t kMaxLostPerHeartbeat = 10'000;
  static constexpr uint64_t kMaxBackoffMs = 1'000;

  MetaLink(MetaDialer& dialer, kj::Timer& timer, DiskSet& disks, Config config);

  // Reads DIR/server.id and registers with the leader, retrying until connectTimeoutMs has
  // passed. Resolves to ok once registered and the identity saved; kWrongCluster at once if the
  // meta server says the data directory belongs to another cluster; kUnavailable "cannot reach
  // meta server at ADDR: ..." (or "meta servers at ADDR,ADDR...") after the timeout; kCorruption if
  // server.id or server.token is malformed; kIo if either cannot be saved.
  kj::Promise<Status> start();
  // After start() succeeded: heartbeats to the leader every heartbeatMs, deletes the chunks it
  // orders deleted, follows leader changes and rides out outages (see above). Resolves only with a
  // fatal Error (kWrongCluster on registering again).
  kj::Promise<Status> run();

  // Heartbeats then carry the scrubber's progress and damage reports, and pass on the meta
  // leader's scrub-now requests. `scrubber` must outlive the link.
  void attach(Scrubber& scrubber) { scrubber_ = &scrubber; }
  // Heartbeats then say how much the write log holds. `log` must outlive the link.
  void attach(DiskLogs& logs) { logs_ = &logs; }

  ServerId id() const { return id_; }
  const std::string& clusterId() const { return clusterId_; }
  // The meta server the link talks to now (the leader, once one accepted it).
  const Address& current() const { return addresses_[current_]; }
  // Every address known: the configured ones, then those learned from hints.
  const std::vector<Address>& addresses() const { return addresses_; }

 private:
  Status parseIdentity(const std::string& text);
  // Reads DIR/server.token into token_, making and saving one if there is none.
  kj::Promise<Status> loadToken();
  kj::Promise<Status> registerUntilDeadline(uint64_t backoffMs);
  // One exchange with the leader: registers if the current server has not accepted this server
  // since the link moved to it, else heartbeats; follows hints and kNotFound at once, `quick`
  // times at most. Resolves to ok, or to what ended it: kWrongCluster (fatal) or an error to
  // retry after a backoff (the link has moved to the next address where that helps).
  kj::Promise<Status> exchange(uint64_t timeoutMs, unsigned quick);
  kj::Promise<Status> exchangeOnce(uint64_t timeoutMs);
  kj::Promise<Result<proto::MetaService::Client>> connected(uint64_t timeoutMs);
  kj::Promise<Status> registerOnce(proto::MetaService::Client client, uint64_t timeoutMs);
  kj::Promise<Status> registered(uint64_t id, std::string clusterId);
  kj::Promise<Status> heartbeat(proto::MetaService::Client client, uint64_t timeoutMs);
  kj::Promise<Status> step();
  // Drops the connection and makes the next address current; registers there.
  void moveOn();
  // Makes `address` current (learning it if unknown); registers there.
  void switchTo(const Address& address);
  void lost(const Error& e);
  void accepted();
  std::string where() const;  // the addresses, for messages

  MetaDialer& dialer_;
  kj::Timer& timer_;
  DiskSet& disk_;
  Config config_;
  std::vector<Address> addresses_;
  size_t current_ = 0;

  ServerId id_;
  std::string clusterId_;
  std::string token_;  // DIR/server.token
  kj::Maybe<proto::MetaService::Client> client_;  // to addresses_[current_], once dialed
  kj::TimePoint deadline_ = kj::origin<kj::TimePoint>();
  std::string startError_;    // what kept start() from registering, for its message
  bool needRegister_ = true;  // the current server has not accepted this server yet
  std::string tried_;         // the server the last exchange went to
  std::string unreachable_;   // the last server that could not be reached; its hints are stale
  std::string leader_;        // the last server that accepted a registration or heartbeat
  bool outage_ = false;
  uint64_t backoffMs_ = 0;
  std::vector<ChunkId> removed_;  // removed on orders, not yet reported
  // The inventory report under way (chunk/inventory.h): one after every registration, then
  // every inventoryMs. Replacing it cancels the one before.
  void startInventory();
  kj::Promise<void> inventory_ = nullptr;
  kj::TimePoint nextInventory_ = kj::origin<kj::TimePoint>();
  Scrubber* scrubber_ = nullptr;
  DiskLogs* logs_ = nullptr;
  size_t lostSent_ = 0;  // disk_.lostShards() reported to the current leader
};

}  // namespace tessera::chunk
