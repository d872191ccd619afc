#include "client/chunk_servers.h"

#include "fs/log.h"

namespace tessera::client {

ChunkServers::ChunkServers(kj::Network& network, kj::Timer& timer, Resolver resolver,
                           uint64_t connectTimeoutMs)
    : network_(network),
      timer_(timer),
      resolver_(kj::mv(resolver)),
      connectTimeoutMs_(connectTimeoutMs) {}

kj::Promise<Result<proto::ChunkService::Client>> ChunkServers::get(ServerId id) {
  auto& e = servers_[id];
  KJ_IF_MAYBE(s, e.service) { return Result<proto::ChunkService::Client>(*s); }
  if (e.everFailed && timer_.now() - e.failedAt < kRetryAfterMs * kj::MILLISECONDS) {
    return Result<proto::ChunkService::Client>(
        Error{Errc::kUnavailable, "chunk server " + std::to_string(id.value) + " failed recently"});
  }
  if (!e.inProgress) {
    // Replacing a finished attempt is safe here: we are not inside its continuation.
    e.inProgress = true;
    e.connecting = connect(id).fork();
  }
  KJ_IF_MAYBE(c, e.connecting) {
    return c->addBranch().then([this, id]() -> Result<proto::ChunkService::Client> {
      auto& e = servers_[id];
      KJ_IF_MAYBE(s, e.service) { return *s; }
      return Error{Errc::kUnavailable, "chunk server " + std::to_string(id.value) +
                                           " unreachable" +
                                           (e.address.empty() ? "" : " at " + e.address)};
    });
  }
  KJ_UNREACHABLE;
}

// Resolves once `id` has a service or is marked failed; never rejects.
kj::Promise<void> ChunkServers::connect(ServerId id) {
  kj::Promise<Result<std::string>> address = nullptr;
  if (!servers_[id].address.empty()) {
    address = Result<std::string>(servers_[id].address);
  } else {
    address = resolver_(id);
  }
  return address
      .then([this, id](Result<std::string> addr) -> kj::Promise<Result<kj::Own<Connection>>> {
        if (!addr) return Result<kj::Own<Connection>>(addr.error());
        auto parsed = Address::parse(*addr);
        if (!parsed) return Result<kj::Own<Connection>>(parsed.error());
        servers_[id].address = *addr;
        return Connection::open(network_, timer_, *parsed, connectTimeoutMs_);
      })
      .then(
          [this, id](Result<kj::Own<Connection>> conn) {
            auto& e = servers_[id];
            e.inProgress = false;
            if (!conn) {
              log::debug("chunk server ", id.value, ": ", conn.error().toString().c_str());
              failed(id);
              return;
            }
            e.connection = kj::mv(*conn);
            e.service = e.connection->bootstrap<proto::ChunkService>();
            e.watch = e.connection->onDisconnect()
                          .then([this, id] { failed(id); }, [this, id](kj::Exception&&) { failed(id); })
                          .eagerlyEvaluate(nullptr);
          },
          [this, id](kj::Exception&& ex) {
            servers_[id].inProgress = false;
            log::debug("chunk server ", id.value, ": ", ex.getDescription());
            failed(id);
          });
}

void ChunkServers::failed(ServerId id) {
  auto& e = servers_[id];
  e.service = nullptr;
  e.address.clear();
  e.everFailed = true;
  e.failedAt = timer_.now();
  // The watch may be what called us: let it finish before the connection goes.
  if (e.connection) {
    auto conn = kj::mv(e.connection);
    auto watch = kj::mv(e.watch);
    e.watch = kj::evalLater([c = kj::mv(conn), w = kj::mv(watch)]() mutable {}).eagerlyEvaluate(nullptr);
  }
}

}  // namespace tessera::client
