#include "chunk/meta_link.h"

#include <doctest/doctest.h>

#include <vector>

#include "fs/log.h"
#include "fs/wire.h"
#include "tests/chunk/chunk_helpers.h"
#include "tests/support/temp_dir.h"

using namespace tessera;
using namespace tessera::chunk;
using tessera::test::crcsOf;
using tessera::test::pattern;

namespace {

// A meta service that records what chunk servers tell it and answers as told.
class FakeMeta final : public proto::MetaService::Server {
 public:
  struct Registration {
    uint64_t id;
    std::string clusterId, address, site, rack, host;
    uint64_t shards;
  };
  struct Heartbeat {
    uint64_t id;
    uint64_t shards, capacity, used;
    std::vector<uint64_t> removed;
  };

  // Answers.
  uint64_t nextId = 7;
  std::string clusterId = "cluster-a";
  bool wrongCluster = false;
  bool down = false;                   // every call fails as over a lost connection
  bool failHeartbeats = false;         // only heartbeats do
  std::vector<uint64_t> removeOrders;  // sent with the next heartbeat reply

  std::vector<Registration> registrations;
  std::vector<Heartbeat> heartbeats;

 protected:
  kj::Promise<void> registerServer(RegisterServerContext context) override {
    if (down) return KJ_EXCEPTION(DISCONNECTED, "meta server gone");
    auto p = context.getParams();
    registrations.push_back({p.getId(), p.getClusterId(), p.getAddress(), p.getSite(), p.getRack(),
                             p.getHost(), p.getShards()});
    auto r = context.getResults();
    if (wrongCluster) {
      toWire(Error{Errc::kWrongCluster, "this is cluster " + clusterId}, r.initError());
      return kj::READY_NOW;
    }
    okToWire(r.initError());
    r.setId(p.getId() != 0 ? p.getId() : nextId);
    r.setClusterId(clusterId);
    return kj::READY_NOW;
  }

  kj::Promise<void> heartbeat(HeartbeatContext context) override {
    if (down || failHeartbeats) return KJ_EXCEPTION(DISCONNECTED, "meta server gone");
    auto p = context.getParams();
    Heartbeat hb{p.getId(), p.getShards(), p.getCapacityBytes(), p.getUsedBytes(), {}};
    for (uint64_t c : p.getRemoved()) hb.removed.push_back(c);
    heartbeats.push_back(hb);
    auto r = context.getResults();
    okToWire(r.initError());
    auto list = r.initRemove(removeOrders.size());
    for (size_t i = 0; i < removeOrders.size(); ++i) list.set(i, removeOrders[i]);
    removeOrders.clear();
    return kj::READY_NOW;
  }
};

class FakeDialer final : public MetaDialer {
 public:
  explicit FakeDialer(proto::MetaService::Client meta) : meta_(kj::mv(meta)) {}
  bool refuse = false;
  int dials = 0;

  kj::Promise<Result<proto::MetaService::Client>> dial(uint64_t) override {
    ++dials;
    if (refuse) return Result<proto::MetaService::Client>(Error{Errc::kUnavailable, "refused"});
    return Result<proto::MetaService::Client>(meta_);
  }
  std::string address() const override { return "meta.test:7000"; }

 private:
  proto::MetaService::Client meta_;
};

// A data directory, a fake meta server, and a manual clock.
struct Fixture {
  test::Loop loop;
  test::TempDir dir{"meta-link-test"};
  kj::Own<Disk> disk = openDisk();
  kj::Own<FakeMeta> metaOwn = kj::heap<FakeMeta>();
  FakeMeta& meta = *metaOwn;
  FakeDialer dialer{proto::MetaService::Client(kj::mv(metaOwn))};
  kj::TimerImpl timer{kj::origin<kj::TimePoint>()};

  // The link logs outages; the tests check them through the fake instead.
  Fixture() { log::setMinLevel(log::Level::kError); }
  ~Fixture() { log::setMinLevel(log::Level::kInfo); }

  kj::Own<Disk> openDisk() {
    auto d = Disk::open({.dir = dir.path()});
    REQUIRE(d.ok());
    return kj::mv(*d);
  }

  kj::Own<MetaLink> link() {
    return kj::heap<MetaLink>(dialer, timer, *disk,
                              MetaLink::Config{.advertise = "10.0.0.5:7500",
                                               .site = "s1",
                                               .rack = "r2",
                                               .host = "h3",
                                               .heartbeatMs = 1000,
                                               .connectTimeoutMs = 10'000});
  }

  void writeShard(uint64_t chunk, uint8_t shard) {
    auto data = pattern(kBlockSize, unsigned(chunk));
    REQUIRE(loop.wait(disk->write({ChunkId(chunk), shard}, Layout::ec(4, 2), 0, data, crcsOf(data),
                                  false))
                .ok());
  }
};

}  // namespace

TEST_CASE("meta link: the first start registers without an id and saves the one it gets") {
  Fixture fx;
  auto link = fx.link();
  auto s = fx.loop.pump(fx.timer, link->start());
  REQUIRE(s.ok());
  REQUIRE(fx.meta.registrations.size() == 1);
  auto& r = fx.meta.registrations[0];
  CHECK(r.id == 0);
  CHECK(r.clusterId == "");
  CHECK(r.address == "10.0.0.5:7500");
  CHECK(r.site == "s1");
  CHECK(r.rack == "r2");
  CHECK(r.host == "h3");
  CHECK(link->id() == ServerId(7));
  CHECK(link->clusterId() == "cluster-a");
  auto saved = fx.loop.wait(fx.disk->readFile("server.id"));
  REQUIRE(saved.ok());
  CHECK(saved->find("id = 7\n") != std::string::npos);
  CHECK(saved->find("cluster = cluster-a\n") != std::string::npos);
}

TEST_CASE("meta link: a restart registers with the saved id and cluster") {
  Fixture fx;
  REQUIRE(fx.loop.pump(fx.timer, fx.link()->start()).ok());
  fx.meta.nextId = 99;  // would be handed to a newcomer
  auto again = fx.link();
  REQUIRE(fx.loop.pump(fx.timer, again->start()).ok());
  REQUIRE(fx.meta.registrations.size() == 2);
  CHECK(fx.meta.registrations[1].id == 7);
  CHECK(fx.meta.registrations[1].clusterId == "cluster-a");
  CHECK(again->id() == ServerId(7));
}

TEST_CASE("meta link: a meta server of another cluster makes start fail") {
  Fixture fx;
  SUBCASE("it says so") {
    fx.meta.wrongCluster = true;
    auto s = fx.loop.pump(fx.timer, fx.link()->start());
    CHECK(s.code() == Errc::kWrongCluster);
    CHECK(!test::fileExists(fx.dir / "server.id"));
  }
  SUBCASE("it answers with another cluster id than the saved one") {
    REQUIRE(fx.loop.pump(fx.timer, fx.link()->start()).ok());
    fx.meta.clusterId = "cluster-b";
    auto s = fx.loop.pump(fx.timer, fx.link()->start());
    CHECK(s.code() == Errc::kWrongCluster);
  }
  SUBCASE("the saved identity is malformed") {
    REQUIRE(fx.loop.wait(fx.disk->writeFile("server.id", "id = seven\n")).ok());
    auto s = fx.loop.pump(fx.timer, fx.link()->start());
    CHECK(s.code() == Errc::kCorruption);
    CHECK(fx.meta.registrations.empty());
  }
}

TEST_CASE("meta link: start gives up after the connect timeout when meta cannot be reached") {
  Fixture fx;
  fx.dialer.refuse = true;
  auto s = fx.loop.pump(fx.timer, fx.link()->start());
  REQUIRE(!s.ok());
  CHECK(s.code() == Errc::kUnavailable);
  CHECK(s.error().detail == "cannot reach meta server at meta.test:7000: refused");
  CHECK(fx.dialer.dials > 3);  // it retried
  CHECK(fx.timer.now() - kj::origin<kj::TimePoint>() >= 10 * kj::SECONDS);
  CHECK(fx.timer.now() - kj::origin<kj::TimePoint>() < 11 * kj::SECONDS);
}

TEST_CASE(
    "meta link: heartbeats carry the disk's figures, and ordered removals are done and "
    "reported") {
  Fixture fx;
  fx.writeShard(5, 0);
  fx.writeShard(5, 3);
  fx.writeShard(6, 0);
  auto link = fx.link();
  REQUIRE(fx.loop.pump(fx.timer, link->start()).ok());
  CHECK(fx.meta.registrations[0].shards == 3);
  auto running = link->run()
                     .then([](Status s) { FAIL_CHECK("run() ended: " << errcName(s.code())); })
                     .eagerlyEvaluate(nullptr);

  fx.loop.runUntil(fx.timer, [&] { return fx.meta.heartbeats.size() == 1; });
  auto& first = fx.meta.heartbeats[0];
  CHECK(first.id == 7);
  CHECK(first.shards == 3);
  CHECK(first.used > 0);
  CHECK(first.capacity > 0);
  CHECK(first.removed.empty());

  fx.meta.removeOrders = {5, 123};
  fx.loop.runUntil(fx.timer, [&] { return fx.meta.heartbeats.size() == 3; });
  CHECK(!test::fileExists(fx.disk->shardPath({ChunkId(5), 0})));
  CHECK(!test::fileExists(fx.disk->shardPath({ChunkId(5), 3})));
  CHECK(test::fileExists(fx.disk->shardPath({ChunkId(6), 0})));
  CHECK(fx.meta.heartbeats[2].removed == std::vector<uint64_t>{5, 123});
  CHECK(fx.meta.heartbeats[2].shards == 1);

  fx.loop.runUntil(fx.timer, [&] { return fx.meta.heartbeats.size() == 4; });
  CHECK(fx.meta.heartbeats[3].removed.empty());
}

TEST_CASE(
    "meta link: after an outage it registers again with its id and reports what it "
    "removed") {
  Fixture fx;
  fx.writeShard(8, 0);
  auto link = fx.link();
  REQUIRE(fx.loop.pump(fx.timer, link->start()).ok());
  auto running = link->run()
                     .then([](Status s) { FAIL_CHECK("run() ended: " << errcName(s.code())); })
                     .eagerlyEvaluate(nullptr);
  fx.meta.removeOrders = {8};
  fx.loop.runUntil(fx.timer, [&] { return fx.meta.heartbeats.size() == 1; });

  // The meta server goes away: calls fail, new connections are refused.
  fx.meta.down = true;
  fx.dialer.refuse = true;
  int dialsBefore = fx.dialer.dials;
  fx.loop.runUntil(fx.timer, [&] { return fx.dialer.dials >= dialsBefore + 5; });
  CHECK(fx.meta.registrations.size() == 1);

  fx.meta.down = false;
  fx.dialer.refuse = false;
  fx.loop.runUntil(fx.timer, [&] { return fx.meta.heartbeats.size() == 2; });
  REQUIRE(fx.meta.registrations.size() == 2);
  CHECK(fx.meta.registrations[1].id == 7);
  CHECK(fx.meta.registrations[1].clusterId == "cluster-a");
  CHECK(fx.meta.heartbeats[1].removed == std::vector<uint64_t>{8});
}

TEST_CASE("meta link: registering again into another cluster ends run() with kWrongCluster") {
  Fixture fx;
  auto link = fx.link();
  REQUIRE(fx.loop.pump(fx.timer, link->start()).ok());
  fx.meta.failHeartbeats = true;
  fx.meta.wrongCluster = true;
  auto s = fx.loop.pump(fx.timer, link->run());
  CHECK(s.code() == Errc::kWrongCluster);
  CHECK(fx.meta.registrations.size() == 2);
}
