#include "client/chunk_servers.h"

#include <doctest/doctest.h>
#include <kj/async-io.h>

#include <string>

#include "fs/options.h"

using namespace tessera;
using client::ChunkServers;

namespace {

// A chunk server that answers nothing: the tests only connect and compare connections.
class Idle final : public proto::ChunkService::Server {};

// Two chunk-server ports on 127.0.0.1 and one ChunkServers whose resolver gives server 1 the
// address `at` says.
struct Setup {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::Network& network = io.provider->getNetwork();
  kj::Timer& timer = io.provider->getTimer();
  kj::Own<RpcServer> a = listen(), b = listen();
  std::string at = address(*a);
  ChunkServers servers{
      network, timer,
      [this](ServerId) {
        return kj::Promise<Result<ChunkServers::Location>>(ChunkServers::Location{at, true});
      },
      5'000};

  kj::Own<RpcServer> listen() {
    auto where = Address::parse("127.0.0.1:0");
    REQUIRE(where.ok());
    auto srv = RpcServer::listen(network, io.waitScope, *where, kj::heap<Idle>());
    REQUIRE(srv.ok());
    return kj::mv(*srv);
  }
  static std::string address(RpcServer& s) { return "127.0.0.1:" + std::to_string(s.port()); }

  Result<proto::ChunkService::Client> get() { return servers.get(ServerId(1)).wait(io.waitScope); }
};

const void* hookOf(proto::ChunkService::Client& c) {
  return capnp::ClientHook::from(kj::cp(c)).get();
}

}  // namespace

TEST_CASE(
    "chunk servers: a late failure of a call on an earlier connection keeps the current one") {
  Setup s;
  auto first = s.get();
  REQUIRE(first.ok());
  auto again = s.get();
  REQUIRE(again.ok());
  CHECK(hookOf(*again) == hookOf(*first));  // one connection, handed out twice

  // A call on it fails: the connection goes. The server comes back at another address.
  s.servers.failed(ServerId(1), *first, KJ_EXCEPTION(DISCONNECTED, "peer disconnected"));
  s.at = Setup::address(*s.b);
  auto second = s.get();
  REQUIRE(second.ok());
  CHECK(hookOf(*second) != hookOf(*first));

  // Another call made on the first connection fails only now: the second one stays.
  s.servers.failed(ServerId(1), *first, KJ_EXCEPTION(DISCONNECTED, "peer disconnected"));
  auto still = s.get();
  REQUIRE(still.ok());
  CHECK(hookOf(*still) == hookOf(*second));

  // A failure on the current connection drops it, and the address that just failed is not
  // dialled again at once.
  s.servers.failed(ServerId(1), *still, KJ_EXCEPTION(DISCONNECTED, "peer disconnected"));
  auto after = s.get();
  REQUIRE(!after.ok());
  CHECK(after.error().code == Errc::kUnavailable);
  CHECK(after.error().detail.find("just now") != std::string::npos);
}
