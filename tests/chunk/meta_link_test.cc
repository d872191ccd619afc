#include "chunk/meta_link.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
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

// A meta server that records what chunk servers tell it and answers as told. Like the real
// one, a leader answers heartbeats only from servers registered with it, and a server that does
// not lead answers everything with kNotLeader.
class FakeMeta final : public proto::MetaService::Server {
 public:
  explicit FakeMeta(kj::Timer& timer) : timer_(timer) {}

  struct Registration {
    uint64_t id;
    std::string clusterId, address, site, rack, host;
    uint64_t shards;
    std::string token;
  };
  struct Heartbeat {
    uint64_t id;
    uint64_t shards, capacity, used;
    std::vector<uint64_t> removed;
    std::vector<proto::DiskState> disks;
    bool noNewShards = false;
    std::vector<std::pair<uint64_t, unsigned>> lost;
  };

  // Answers.
  uint64_t nextId = 7;
  std::string clusterId = "cluster-a";
  bool wrongCluster = false;
  bool down = false;                   // every call fails as over a lost connection
  bool failHeartbeats = false;         // only heartbeats do
  std::vector<uint64_t> removeOrders;  // sent with the next heartbeat reply
  bool leader = true;
  std::string hint;                    // the leader hint when not leading
  int loseAnswers = 0;                 // registrations recorded, then answered as if cut off

  std::vector<Registration> registrations;  // accepted ones
  std::vector<Heartbeat> heartbeats;        // accepted ones
  std::set<uint64_t> known;                 // registered here, as a leader's soft state
  int calls = 0;                            // every call, answered or not
  // "register" or "heartbeat" (accepted), "unknown" (a heartbeat answered kNotFound), with
  // when it arrived.
  std::vector<std::pair<std::string, kj::TimePoint>> events;

  void forget() { known.clear(); }

 protected:
  kj::Promise<void> registerServer(RegisterServerContext context) override {
    ++calls;
    if (down) return KJ_EXCEPTION(DISCONNECTED, "meta server gone");
    auto p = context.getParams();
    if (!leader) {
      toWire(Error{Errc::kNotLeader, "not the leader", hint}, context.getResults().initError());
      return kj::READY_NOW;
    }
    registrations.push_back({p.getId(), p.getClusterId(), p.getAddress(), p.getSite(), p.getRack(),
                             p.getHost(), p.getShards(), p.getToken()});
    if (loseAnswers > 0) {
      --loseAnswers;
      return KJ_EXCEPTION(DISCONNECTED, "answer lost");
    }
    auto r = context.getResults();
    if (wrongCluster) {
      toWire(Error{Errc::kWrongCluster, "this is cluster " + clusterId}, r.initError());
      return kj::READY_NOW;
    }
    okToWire(r.initError());
    r.setId(p.getId() != 0 ? p.getId() : nextId);
    r.setClusterId(clusterId);
    known.insert(r.getId());
    events.push_back({"register", timer_.now()});
    return kj::READY_NOW;
  }

  kj::Promise<void> heartbeat(HeartbeatContext context) override {
    ++calls;
    if (down || failHeartbeats) return KJ_EXCEPTION(DISCONNECTED, "meta server gone");
    auto p = context.getParams();
    if (!leader) {
      toWire(Error{Errc::kNotLeader, "not the leader", hint}, context.getResults().initError());
      return kj::READY_NOW;
    }
    if (!known.count(p.getId())) {
      events.push_back({"unknown", timer_.now()});
      toWire(Error{Errc::kNotFound, "unknown server; register first"},
             context.getResults().initError());
      return kj::READY_NOW;
    }
    events.push_back({"heartbeat", timer_.now()});
    Heartbeat hb{p.getId(), p.getShards(), p.getCapacityBytes(), p.getUsedBytes(), {}, {}, false, {}};
    for (uint64_t c : p.getRemoved()) hb.removed.push_back(c);
    for (auto d : p.getDisks()) hb.disks.push_back(d.getState());
    hb.noNewShards = p.getNoNewShards();
    for (auto l : p.getLost()) hb.lost.push_back({l.getChunk(), l.getShard()});
    heartbeats.push_back(hb);
    auto r = context.getResults();
    okToWire(r.initError());
    auto list = r.initRemove(removeOrders.size());
    for (size_t i = 0; i < removeOrders.size(); ++i) list.set(i, removeOrders[i]);
    removeOrders.clear();
    return kj::READY_NOW;
  }

 private:
  kj::Timer& timer_;
};

// Meta servers by address; any other address, or one refused, does not answer.
class FakeDialer final : public MetaDialer {
 public:
  bool refuse = false;          // every address
  std::set<std::string> down;   // these addresses
  int dials = 0;
  std::vector<std::string> dialed;

  void add(const std::string& address, proto::MetaService::Client meta) {
    metas_.emplace(address, kj::mv(meta));
  }

  kj::Promise<Result<proto::MetaService::Client>> dial(const Address& address,
                                                       uint64_t) override {
    ++dials;
    std::string text = address.toString();
    dialed.push_back(text);
    auto it = metas_.find(text);
    if (refuse || down.count(text) || it == metas_.end()) {
      return Result<proto::MetaService::Client>(Error{Errc::kUnavailable, "refused"});
    }
    return Result<proto::MetaService::Client>(it->second);
  }

 private:
  std::map<std::string, proto::MetaService::Client> metas_;
};

// A data directory, fake meta servers (`meta` at meta.test:7000, more from addMeta()), and a
// manual clock.
struct Fixture {
  test::Loop loop;
  kj::TimerImpl timer{kj::origin<kj::TimePoint>()};
  test::TempDir dir{"meta-link-test"};
  kj::Own<DiskSet> disk = openDisk();
  FakeDialer dialer;
  FakeMeta& meta = addMeta("meta.test:7000");
  std::vector<Address> metaAddresses{{"meta.test", 7000}};

  // The link logs outages; the tests check them through the fake instead.
  Fixture() { log::setMinLevel(log::Level::kError); }
  ~Fixture() { log::setMinLevel(log::Level::kInfo); }

  kj::Own<DiskSet> openDisk() {
    auto d = DiskSet::open({.dirs = {dir.path()}});
    REQUIRE(d.ok());
    return kj::mv(*d);
  }

  FakeMeta& addMeta(const std::string& address) {
    auto own = kj::heap<FakeMeta>(timer);
    FakeMeta& m = *own;
    dialer.add(address, proto::MetaService::Client(kj::mv(own)));
    return m;
  }

  kj::Own<MetaLink> link(uint64_t connectTimeoutMs = 10'000) {
    return kj::heap<MetaLink>(dialer, timer, *disk,
                              MetaLink::Config{.meta = metaAddresses,
                                               .advertise = "10.0.0.5:7500",
                                               .site = "s1",
                                               .rack = "r2",
                                               .host = "h3",
                                               .heartbeatMs = 1000,
                                               .connectTimeoutMs = connectTimeoutMs});
  }

  kj::Promise<void> running(MetaLink& link) {
    return link.run()
        .then([](Status s) { FAIL_CHECK("run() ended: " << errcName(s.code())); })
        .eagerlyEvaluate(nullptr);
  }

  kj::Duration elapsed() { return timer.now() - kj::origin<kj::TimePoint>(); }

  void writeShard(uint64_t chunk, uint8_t shard) {
    auto data = pattern(kBlockSize, unsigned(chunk));
    REQUIRE(loop.wait(disk->write({ChunkId(chunk), shard}, Layout::ec(4, 2), 0, data, crcsOf(data),
                                  false, NewShard::kCreate))
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

TEST_CASE("meta link: every registration carries the token saved before the first one") {
  Fixture fx;
  // The first answer is lost: the retry and a later restart present the same token, which is
  // what lets the meta leader answer the same id.
  fx.meta.loseAnswers = 1;
  REQUIRE(fx.loop.pump(fx.timer, fx.link()->start()).ok());
  REQUIRE(fx.loop.pump(fx.timer, fx.link()->start()).ok());
  REQUIRE(fx.meta.registrations.size() == 3);
  std::string token = fx.meta.registrations[0].token;
  CHECK(checkServerToken(token).ok());
  CHECK(token.size() == 32);
  CHECK(fx.meta.registrations[0].id == 0);
  CHECK(fx.meta.registrations[1].id == 0);
  CHECK(fx.meta.registrations[1].token == token);
  CHECK(fx.meta.registrations[2].id == 7);
  CHECK(fx.meta.registrations[2].token == token);
  auto saved = fx.loop.wait(fx.disk->readFile("server.token"));
  REQUIRE(saved.ok());
  CHECK(*saved == token + "\n");

  // Another data directory gets another token.
  test::TempDir other{"meta-link-test-other"};
  auto otherDisk = DiskSet::open({.dirs = {other.path()}});
  REQUIRE(otherDisk.ok());
  MetaLink link(fx.dialer, fx.timer, **otherDisk,
                MetaLink::Config{.meta = fx.metaAddresses,
                                 .advertise = "10.0.0.6:7500",
                                 .site = "s1",
                                 .rack = "r1",
                                 .host = "h1"});
  REQUIRE(fx.loop.pump(fx.timer, link.start()).ok());
  CHECK(fx.meta.registrations.back().token != token);
}

TEST_CASE("meta link: a data directory of an older version gets a token, kept from then on") {
  Fixture fx;
  REQUIRE(fx.loop.wait(fx.disk->writeFile("server.id", "id = 7\ncluster = cluster-a\n")).ok());
  REQUIRE(fx.loop.pump(fx.timer, fx.link()->start()).ok());
  REQUIRE(fx.loop.pump(fx.timer, fx.link()->start()).ok());
  REQUIRE(fx.meta.registrations.size() == 2);
  CHECK(fx.meta.registrations[0].id == 7);
  CHECK(checkServerToken(fx.meta.registrations[0].token).ok());
  CHECK(fx.meta.registrations[1].token == fx.meta.registrations[0].token);
}

TEST_CASE("meta link: a malformed token file makes start fail before registering") {
  Fixture fx;
  REQUIRE(fx.loop.wait(fx.disk->writeFile("server.token", "abc\n")).ok());
  auto s = fx.loop.pump(fx.timer, fx.link()->start());
  CHECK(s.code() == Errc::kCorruption);
  CHECK(fx.meta.registrations.empty());
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

// --- a meta cluster of several servers ---------------------------------------------------------

TEST_CASE("meta link: start follows a leader hint and registers with the leader") {
  Fixture fx;
  FakeMeta& b = fx.addMeta("meta.test:7001");
  FakeMeta& c = fx.addMeta("meta.test:7002");
  fx.metaAddresses = {{"meta.test", 7000}, {"meta.test", 7001}, {"meta.test", 7002}};
  fx.meta.leader = false;
  fx.meta.hint = "meta.test:7002";
  b.leader = false;
  auto link = fx.link();
  REQUIRE(fx.loop.pump(fx.timer, link->start()).ok());
  CHECK(c.registrations.size() == 1);
  CHECK(b.calls == 0);
  CHECK(fx.meta.calls == 1);
  CHECK(link->current().toString() == "meta.test:7002");
  CHECK(fx.elapsed() == 0 * kj::SECONDS);  // a hint is followed at once
  CHECK(link->id() == ServerId(7));
}

TEST_CASE("meta link: a hint naming a server not in --meta is followed and learned") {
  Fixture fx;
  FakeMeta& other = fx.addMeta("meta.other:9000");
  fx.meta.leader = false;
  fx.meta.hint = "meta.other:9000";
  auto link = fx.link();
  REQUIRE(fx.loop.pump(fx.timer, link->start()).ok());
  CHECK(other.registrations.size() == 1);
  CHECK(link->addresses().size() == 2);
  CHECK(link->current().toString() == "meta.other:9000");
}

TEST_CASE("meta link: start skips a meta server that does not answer, or one without a hint") {
  Fixture fx;
  FakeMeta& b = fx.addMeta("meta.test:7001");
  fx.metaAddresses = {{"meta.test", 7000}, {"meta.test", 7001}};
  SUBCASE("it is dead") { fx.dialer.down.insert("meta.test:7000"); }
  SUBCASE("its calls fail") { fx.meta.down = true; }
  SUBCASE("it does not lead and knows no leader") { fx.meta.leader = false; }
  auto link = fx.link();
  REQUIRE(fx.loop.pump(fx.timer, link->start()).ok());
  CHECK(b.registrations.size() == 1);
  CHECK(fx.meta.registrations.empty());
  CHECK(link->current().toString() == "meta.test:7001");
}

TEST_CASE("meta link: start waits out an election and registers once a leader appears") {
  Fixture fx;
  FakeMeta& b = fx.addMeta("meta.test:7001");
  FakeMeta& c = fx.addMeta("meta.test:7002");
  fx.metaAddresses = {{"meta.test", 7000}, {"meta.test", 7001}, {"meta.test", 7002}};
  for (FakeMeta* m : {&fx.meta, &b, &c}) m->leader = false;
  auto link = fx.link();
  Status result = Error{Errc::kIo, "not done"};
  bool done = false;
  auto starting = link->start()
                      .then([&](Status s) {
                        result = kj::mv(s);
                        done = true;
                      })
                      .eagerlyEvaluate(nullptr);
  fx.loop.runUntil(fx.timer, [&] { return done || fx.elapsed() >= 3 * kj::SECONDS; });
  REQUIRE(!done);
  int callsDuringElection = fx.meta.calls + b.calls + c.calls;
  CHECK(callsDuringElection >= 3);  // it kept asking, round robin
  CHECK(callsDuringElection < 30);  // with a backoff
  CHECK(fx.meta.calls > 0);
  CHECK(b.calls > 0);
  CHECK(c.calls > 0);
  // b wins; the others learn it.
  b.leader = true;
  fx.meta.hint = c.hint = "meta.test:7001";
  fx.loop.runUntil(fx.timer, [&] { return done; });
  REQUIRE(result.ok());
  CHECK(b.registrations.size() == 1);
  CHECK(fx.elapsed() < 5 * kj::SECONDS);
}

TEST_CASE("meta link: servers whose hints name each other do not make it spin") {
  Fixture fx;
  FakeMeta& b = fx.addMeta("meta.test:7001");
  fx.metaAddresses = {{"meta.test", 7000}, {"meta.test", 7001}};
  fx.meta.leader = false;
  fx.meta.hint = "meta.test:7001";
  b.leader = false;
  b.hint = "meta.test:7000";
  auto s = fx.loop.pump(fx.timer, fx.link(/*connectTimeoutMs=*/3'000)->start());
  REQUIRE(!s.ok());
  CHECK(s.code() == Errc::kUnavailable);
  CHECK(s.error().detail.find("cannot reach meta servers at meta.test:7000,meta.test:7001: ") == 0);
  CHECK(fx.elapsed() >= 3 * kj::SECONDS);
  CHECK(fx.elapsed() < 4 * kj::SECONDS);
  int calls = fx.meta.calls + b.calls;
  CAPTURE(calls);
  // A few immediate retries per backoff (100 ms doubling to 1 s), not thousands.
  CHECK(calls > 4);
  CHECK(calls < 40);
}

TEST_CASE("meta link: when the leader changes, it registers with the new one, then heartbeats") {
  Fixture fx;
  FakeMeta& b = fx.addMeta("meta.test:7001");
  fx.metaAddresses = {{"meta.test", 7000}, {"meta.test", 7001}};
  b.leader = false;
  b.hint = "meta.test:7000";
  auto link = fx.link();
  REQUIRE(fx.loop.pump(fx.timer, link->start()).ok());
  auto running = fx.running(*link);
  fx.loop.runUntil(fx.timer, [&] { return fx.meta.heartbeats.size() == 2; });
  CHECK(b.calls == 0);

  SUBCASE("the old leader steps down and names the new one") {
    fx.meta.leader = false;
    fx.meta.hint = "meta.test:7001";
  }
  SUBCASE("the old leader dies") {
    fx.meta.down = true;
    fx.dialer.down.insert("meta.test:7000");
  }
  SUBCASE("the old leader steps down during an election") { fx.meta.leader = false; }
  b.leader = true;
  kj::TimePoint changed = fx.timer.now();
  fx.loop.runUntil(fx.timer, [&] { return b.heartbeats.size() == 2; });
  // The new leader learned this server's figures from its registration before any heartbeat,
  // and never had to refuse a heartbeat from a server it did not know.
  REQUIRE(b.events.size() == 3);
  CHECK(b.events[0].first == "register");
  CHECK(b.events[1].first == "heartbeat");
  CHECK(b.events[2].first == "heartbeat");
  CHECK(b.registrations[0].id == 7);
  CHECK(b.registrations[0].clusterId == "cluster-a");
  CHECK(b.registrations[0].address == "10.0.0.5:7500");
  CHECK(b.events[0].second - changed <= 3 * kj::SECONDS);
  CHECK(link->current().toString() == "meta.test:7001");
  CHECK(fx.meta.registrations.size() == 1);
}

TEST_CASE("meta link: a leader that does not know this server gets a registration at once") {
  Fixture fx;
  auto link = fx.link();
  REQUIRE(fx.loop.pump(fx.timer, link->start()).ok());
  auto running = fx.running(*link);
  fx.loop.runUntil(fx.timer, [&] { return fx.meta.heartbeats.size() == 1; });
  fx.meta.forget();  // a new leader at the same address, say
  fx.loop.runUntil(fx.timer, [&] { return fx.meta.heartbeats.size() == 2; });
  REQUIRE(fx.meta.events.size() == 5);
  CHECK(fx.meta.events[0].first == "register");
  CHECK(fx.meta.events[1].first == "heartbeat");
  CHECK(fx.meta.events[2].first == "unknown");
  CHECK(fx.meta.events[3].first == "register");
  CHECK(fx.meta.events[4].first == "heartbeat");
  // Registered in the same turn as the refused heartbeat, not after a backoff.
  CHECK(fx.meta.events[3].second == fx.meta.events[2].second);
  CHECK(fx.meta.registrations[1].id == 7);
}

TEST_CASE("meta link: a meta cluster of another cluster ends run() even after a leader change") {
  Fixture fx;
  FakeMeta& b = fx.addMeta("meta.test:7001");
  fx.metaAddresses = {{"meta.test", 7000}, {"meta.test", 7001}};
  auto link = fx.link();
  REQUIRE(fx.loop.pump(fx.timer, link->start()).ok());
  fx.meta.leader = false;
  fx.meta.hint = "meta.test:7001";
  b.clusterId = "cluster-b";
  auto s = fx.loop.pump(fx.timer, link->run());
  CHECK(s.code() == Errc::kWrongCluster);
  CHECK(b.registrations.size() == 1);
}

TEST_CASE("meta link: heartbeats carry each disk's state and the shards lost on a failed one, "
          "again to a new leader") {
  Fixture fx;
  test::TempDir second("meta-link-test-b");
  fx.disk = nullptr;  // the fixture's set holds the lock of its directory
  auto two = DiskSet::open({.dirs = {fx.dir.path(), second.path()}});
  REQUIRE(two.ok());
  fx.disk = kj::mv(*two);
  fx.loop.wait(fx.disk->stats());
  for (uint64_t c = 1; c <= 4; ++c) fx.writeShard(c, 1);
  std::vector<std::pair<uint64_t, unsigned>> onFirst;
  for (uint64_t c = 1; c <= 4; ++c) {
    if (fx.disk->diskOf({ChunkId(c), 1}) == 0u) onFirst.push_back({c, 1});
  }
  REQUIRE(!onFirst.empty());
  auto link = fx.link();
  REQUIRE(fx.loop.pump(fx.timer, link->start()).ok());
  auto running = fx.running(*link);
  fx.loop.runUntil(fx.timer, [&] { return fx.meta.heartbeats.size() == 1; });
  CHECK(fx.meta.heartbeats[0].disks ==
        std::vector<proto::DiskState>{proto::DiskState::OK, proto::DiskState::OK});
  CHECK(fx.meta.heartbeats[0].lost.empty());

  REQUIRE(::rename(fx.dir.path().c_str(), (fx.dir.path() + ".gone").c_str()) == 0);
  fx.loop.runUntil(fx.timer, [&] { return fx.meta.heartbeats.size() == 3; });
  ::rename((fx.dir.path() + ".gone").c_str(), fx.dir.path().c_str());
  auto& failed = fx.meta.heartbeats[1];
  CHECK(failed.disks == std::vector<proto::DiskState>{proto::DiskState::FAILED, proto::DiskState::OK});
  CHECK(!failed.noNewShards);
  auto lost = failed.lost;
  std::sort(lost.begin(), lost.end());
  CHECK(lost == onFirst);
  CHECK(fx.meta.heartbeats[2].lost.empty());  // told once

  fx.meta.forget();  // a new leader: registers again and hears of them again
  fx.loop.runUntil(fx.timer, [&] { return fx.meta.heartbeats.size() == 4; });
  CHECK(fx.meta.heartbeats[3].lost.size() == onFirst.size());
}
