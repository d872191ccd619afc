#include "fs/chunk_peers.h"

#include "fs/options.h"

namespace tessera {

ChunkPeers::ChunkPeers(kj::Network& network, kj::Timer& timer, uint64_t connectTimeoutMs)
    : network_(network), timer_(timer), connectTimeoutMs_(connectTimeoutMs) {}

kj::Promise<Result<proto::ChunkService::Client>> ChunkPeers::get(const std::string& address) {
  using R = Result<proto::ChunkService::Client>;
  auto& e = peers_[address];
  KJ_IF_MAYBE(s, e.service) { return R(*s); }
  if (!e.inProgress) {
    e.inProgress = true;
    e.connecting = connect(address).fork();
  }
  KJ_IF_MAYBE(c, e.connecting) {
    return c->addBranch().then([this, address]() -> R {
      auto& e = peers_[address];
      KJ_IF_MAYBE(s, e.service) { return *s; }
      return e.lastError;
    });
  }
  KJ_UNREACHABLE;
}

// Resolves once the entry has a service or lastError says why not; never rejects.
kj::Promise<void> ChunkPeers::connect(const std::string& address) {
  auto parsed = Address::parse(address);
  if (!parsed) {
    auto& e = peers_[address];
    e.inProgress = false;
    e.lastError = Error{Errc::kInvalid, "bad chunk server address '" + address + "'"};
    return kj::READY_NOW;
  }
  return Connection::open(network_, timer_, *parsed, connectTimeoutMs_)
      .then([this, address](Result<kj::Own<Connection>> conn) {
        auto& e = peers_[address];
        e.inProgress = false;
        if (!conn) {
          e.lastError = Error{Errc::kUnavailable,
                              "chunk server at " + address + ": " + conn.error().detail};
          return;
        }
        e.connection = kj::mv(*conn);
        e.service = e.connection->bootstrap<proto::ChunkService>();
        e.watch = e.connection->onDisconnect()
                      .then([this, address] { failed(address); },
                            [this, address](kj::Exception&&) { failed(address); })
                      .eagerlyEvaluate(nullptr);
      })
      .catch_([this, address](kj::Exception&& ex) {
        auto& e = peers_[address];
        e.inProgress = false;
        e.lastError = errorFromException(ex, "connect");
      });
}

void ChunkPeers::failed(const std::string& address) {
  auto it = peers_.find(address);
  if (it == peers_.end()) return;
  auto& e = it->second;
  if (e.service == nullptr && !e.connection) return;
  e.service = nullptr;
  // The watch may be what called us: let it finish before the connection goes.
  auto conn = kj::mv(e.connection);
  auto watch = kj::mv(e.watch);
  e.watch = kj::evalLater([c = kj::mv(conn), w = kj::mv(watch)]() mutable {})
                .eagerlyEvaluate(nullptr);
}

}  // namespace tessera
