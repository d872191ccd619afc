#include "client/meta_link.h"

#include <doctest/doctest.h>

#include <capnp/rpc-twoparty.h>
#include <kj/async.h>
#include <kj/timer.h>

#include <deque>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "fs/log.h"
#include "fs/wire.h"

using namespace tessera;
using client::MetaLink;

namespace {

// How one fake meta server answers getattr: the leader answers with its own number as the
// inode, the others with kNotLeader and their hint.
struct MetaState {
  uint64_t number = 0;
  bool leader = false;
  std::string hint;    // leader hint when not leading; empty during an election
  bool hang = false;   // takes the call and never answers
  bool drop = false;   // takes the call and fails it as a lost connection
  int calls = 0;       // every getattr that arrived
};

class FakeMeta final : public proto::MetaService::Server {
 public:
  explicit FakeMeta(MetaState& state) : state_(state) {}

 protected:
  kj::Promise<void> getattr(GetattrContext context) override {
    ++state_.calls;
    if (state_.hang) return kj::NEVER_DONE;
    if (state_.drop) return KJ_EXCEPTION(DISCONNECTED, "connection lost");
    auto results = context.getResults();
    if (!state_.leader) {
      toWire(Error{Errc::kNotLeader, "not the leader", state_.hint}, results.initError());
      return kj::READY_NOW;
    }
    okToWire(results.initError());
    results.initAttr().setInode(state_.number);
    return kj::READY_NOW;
  }

 private:
  MetaState& state_;
};

// Serves the fake meta servers over in-process pipes, by address. Addresses it does not know,
// and dead ones, refuse connections.
class FakeDialer final : public client::MetaDialer {
 public:
  std::set<std::string> dead;
  std::vector<std::string> dialed;

  void add(const std::string& address, MetaState& state) {
    servers_.emplace(address, kj::heap<capnp::TwoPartyServer>(kj::heap<FakeMeta>(state)));
  }

  kj::Promise<Result<kj::Own<Connection>>> dial(const Address& address, uint64_t) override {
    std::string text = address.toString();
    dialed.push_back(text);
    auto it = servers_.find(text);
    if (it == servers_.end() || dead.count(text)) {
      return Result<kj::Own<Connection>>(
          Error{Errc::kUnavailable, "connect to " + text + ": connection refused"});
    }
    auto pipe = kj::newTwoWayPipe();
    it->second->accept(kj::mv(pipe.ends[1]));
    return Result<kj::Own<Connection>>(kj::heap<Connection>(kj::mv(pipe.ends[0])));
  }

 private:
  std::map<std::string, kj::Own<capnp::TwoPartyServer>> servers_;
};

// An event loop, a manual clock, and fake meta servers a (number 1) at meta.test:7001, b (2) at
// :7002 and c (3) at :7003, none leading.
struct Fixture {
  kj::EventLoop loop;
  kj::WaitScope ws{loop};
  kj::TimerImpl timer{kj::origin<kj::TimePoint>()};
  std::deque<MetaState> states;
  FakeDialer dialer;
  MetaState& a = add("meta.test:7001");
  MetaState& b = add("meta.test:7002");
  MetaState& c = add("meta.test:7003");
  MetaLink::Config config{.addresses = {{"meta.test", 7001}, {"meta.test", 7002},
                                        {"meta.test", 7003}},
                          .connectTimeoutMs = 1'000,
                          .callTimeoutMs = 1'000,
                          .retryForMs = 10'000};

  // The link logs leader changes; the tests look at the fakes instead.
  Fixture() { log::setMinLevel(log::Level::kError); }
  ~Fixture() { log::setMinLevel(log::Level::kInfo); }

  MetaState& add(const std::string& address) {
    MetaState& s = states.emplace_back();
    s.number = states.size();
    dialer.add(address, s);
    return s;
  }

  kj::Own<MetaLink> link() { return kj::heap<MetaLink>(dialer, timer, config); }

  int calls() const { return a.calls + b.calls + c.calls; }
  kj::Duration elapsed() const { return timer.now() - kj::origin<kj::TimePoint>(); }

  // Runs the loop, moving the clock to its next event whenever nothing else is ready, until
  // `done()` holds.
  template <typename Done>
  void runUntil(Done&& done) {
    for (int turns = 0; !done(); ++turns) {
      if (turns == 100'000) FAIL("still not done after 100000 turns");
      ws.poll();
      if (done()) return;
      KJ_IF_MAYBE(next, timer.nextEvent()) {
        timer.advanceTo(*next);
      } else {
        FAIL("stuck: nothing to run and no timer set");
      }
    }
  }

  // `p`'s value, with the clock moved along as runUntil() does.
  template <typename T>
  T run(kj::Promise<T> p) {
    kj::Maybe<T> result;
    auto running = p.then([&result](T v) { result = kj::mv(v); }).eagerlyEvaluate(nullptr);
    runUntil([&] { return result != nullptr; });
    return kj::mv(KJ_ASSERT_NONNULL(result));
  }
};

// getattr through the link: the number of the server that answered it.
kj::Promise<Result<uint64_t>> getattr(MetaLink& link, bool idempotent = true) {
  return link.call<uint64_t>("getattr", idempotent, [](proto::MetaService::Client meta) {
    auto req = meta.getattrRequest();
    req.setInode(1);
    return req.send().then(
        [](capnp::Response<proto::MetaService::GetattrResults> r) -> Result<uint64_t> {
          if (auto s = fromWire(r.getError()); !s) return s.error();
          return r.getAttr().getInode();
        });
  });
}

}  // namespace

TEST_CASE("client meta link: a call follows a leader hint to the leader, at once") {
  Fixture fx;
  fx.a.hint = "meta.test:7003";
  fx.c.leader = true;
  auto link = fx.link();
  auto r = fx.run(getattr(*link));
  REQUIRE(r.ok());
  CHECK(*r == 3);
  CHECK(fx.a.calls == 1);
  CHECK(fx.b.calls == 0);
  CHECK(fx.elapsed() == 0 * kj::SECONDS);
  CHECK(link->current().toString() == "meta.test:7003");
  // The next call goes straight to the leader.
  REQUIRE(fx.run(getattr(*link)).ok());
  CHECK(fx.a.calls == 1);
  CHECK(fx.c.calls == 2);
}

TEST_CASE("client meta link: a hint naming a server not in --meta is followed and learned") {
  Fixture fx;
  MetaState& d = fx.add("meta.other:9000");
  d.leader = true;
  fx.a.hint = "meta.other:9000";
  auto link = fx.link();
  auto r = fx.run(getattr(*link));
  REQUIRE(r.ok());
  CHECK(*r == d.number);
  CHECK(link->addresses().size() == 4);
  CHECK(link->current().toString() == "meta.other:9000");
}

TEST_CASE("client meta link: without a hint the call goes to the next address") {
  Fixture fx;
  fx.b.leader = true;
  auto link = fx.link();
  auto r = fx.run(getattr(*link));
  REQUIRE(r.ok());
  CHECK(*r == 2);
  CHECK(fx.a.calls == 1);
  CHECK(fx.c.calls == 0);
  // After one backoff, not at once: the cluster may be electing.
  CHECK(fx.elapsed() == MetaLink::kFirstBackoffMs * kj::MILLISECONDS);
}

TEST_CASE("client meta link: a meta server that cannot be reached is skipped") {
  Fixture fx;
  fx.dialer.dead.insert("meta.test:7001");
  fx.b.leader = true;
  auto link = fx.link();
  auto r = fx.run(getattr(*link));
  REQUIRE(r.ok());
  CHECK(*r == 2);
  CHECK(fx.a.calls == 0);
  CHECK(fx.dialer.dialed == std::vector<std::string>{"meta.test:7001", "meta.test:7002"});
}

TEST_CASE("client meta link: a server that hangs is left after the call timeout") {
  Fixture fx;
  fx.a.leader = true;
  fx.a.hang = true;
  fx.b.leader = true;
  auto link = fx.link();
  auto r = fx.run(getattr(*link));
  REQUIRE(r.ok());
  CHECK(*r == 2);
  CHECK(fx.elapsed() >= fx.config.callTimeoutMs * kj::MILLISECONDS);
  CHECK(fx.elapsed() < 2 * fx.config.callTimeoutMs * kj::MILLISECONDS);
}

TEST_CASE("client meta link: a call made during an election completes once a leader is elected") {
  Fixture fx;
  auto link = fx.link();
  kj::Maybe<Result<uint64_t>> result;
  auto call = getattr(*link)
                  .then([&](Result<uint64_t> r) { result = kj::mv(r); })
                  .eagerlyEvaluate(nullptr);
  fx.runUntil([&] { return result != nullptr || fx.elapsed() >= 3 * kj::SECONDS; });
  REQUIRE(result == nullptr);
  CAPTURE(fx.calls());
  // It kept asking every server in turn, with a backoff (50 ms doubling to 1 s).
  CHECK(fx.a.calls > 0);
  CHECK(fx.b.calls > 0);
  CHECK(fx.c.calls > 0);
  CHECK(fx.calls() < 20);
  // b wins; the others learn it.
  fx.b.leader = true;
  fx.a.hint = fx.c.hint = "meta.test:7002";
  fx.runUntil([&] { return result != nullptr; });
  auto& r = KJ_ASSERT_NONNULL(result);
  REQUIRE(r.ok());
  CHECK(*r == 2);
  CHECK(fx.elapsed() < 3 * kj::SECONDS + MetaLink::kMaxBackoffMs * kj::MILLISECONDS);
}

TEST_CASE("client meta link: a call gives up with kUnavailable once retryFor has passed") {
  Fixture fx;
  fx.config.retryForMs = 3'000;
  SUBCASE("no server leads") {}
  SUBCASE("no server answers") {
    for (auto address : {"meta.test:7001", "meta.test:7002", "meta.test:7003"}) {
      fx.dialer.dead.insert(address);
    }
  }
  auto link = fx.link();
  auto r = fx.run(getattr(*link));
  REQUIRE(!r.ok());
  CHECK(r.code() == Errc::kUnavailable);
  CHECK(r.error().detail.find("no meta leader answered within 3000 ms") != std::string::npos);
  CHECK(fx.elapsed() >= 3 * kj::SECONDS);
  CHECK(fx.elapsed() < 3 * kj::SECONDS + 100 * kj::MILLISECONDS);
}

TEST_CASE("client meta link: a call that is not idempotent is not repeated once it may have run") {
  Fixture fx;
  fx.a.leader = true;
  fx.b.leader = true;
  auto link = fx.link();
  SUBCASE("the connection fails after the call was sent") {
    fx.a.drop = true;
    auto r = fx.run(getattr(*link, /*idempotent=*/false));
    CHECK(r.code() == Errc::kUnavailable);
  }
  SUBCASE("the call times out") {
    fx.a.hang = true;
    auto r = fx.run(getattr(*link, /*idempotent=*/false));
    CHECK(r.code() == Errc::kTimedOut);
  }
  CHECK(fx.a.calls == 1);
  CHECK(fx.b.calls == 0);
  // The link moved on all the same: the next call reaches a working server.
  auto next = fx.run(getattr(*link, /*idempotent=*/false));
  REQUIRE(next.ok());
  CHECK(*next == 2);
}

TEST_CASE("client meta link: a call that is not idempotent is retried when nothing was done") {
  Fixture fx;
  SUBCASE("kNotLeader with a hint") { fx.a.hint = "meta.test:7002"; }
  SUBCASE("kNotLeader without one") {}
  SUBCASE("no connection to the first server") { fx.dialer.dead.insert("meta.test:7001"); }
  fx.b.leader = true;
  auto link = fx.link();
  auto r = fx.run(getattr(*link, /*idempotent=*/false));
  REQUIRE(r.ok());
  CHECK(*r == 2);
}

TEST_CASE("client meta link: servers whose hints name each other do not make a call spin") {
  Fixture fx;
  fx.config.retryForMs = 2'000;
  fx.a.hint = "meta.test:7002";
  fx.b.hint = "meta.test:7001";
  auto link = fx.link();
  auto r = fx.run(getattr(*link));
  CHECK(r.code() == Errc::kUnavailable);
  CAPTURE(fx.calls());
  // A few immediate retries per backoff (about six pauses in 2 s), not thousands.
  CHECK(fx.calls() > 4);
  CHECK(fx.calls() < 40);
  CHECK(fx.elapsed() >= 2 * kj::SECONDS);
}

TEST_CASE("client meta link: concurrent calls share the leader they find") {
  Fixture fx;
  fx.a.hint = "meta.test:7003";
  fx.b.hint = "meta.test:7003";
  fx.c.leader = true;
  auto link = fx.link();
  auto calls = kj::heapArrayBuilder<kj::Promise<Result<uint64_t>>>(3);
  for (int i = 0; i < 3; ++i) calls.add(getattr(*link));
  auto results = fx.run(kj::joinPromises(calls.finish()));
  for (auto& r : results) {
    REQUIRE(r.ok());
    CHECK(*r == 3);
  }
  CHECK(fx.b.calls == 0);
  CHECK(fx.dialer.dialed == std::vector<std::string>{"meta.test:7001", "meta.test:7003"});
}

namespace {

// A mutation that the fake meta cluster answers stale while it carries session 1 (expired),
// and with its seq otherwise. `seen` collects the (session, seq) of every send.
MetaLink::MutateFn<uint64_t> staleUnderSession1(std::vector<std::pair<uint64_t, uint64_t>>& seen) {
  return [&seen](proto::MetaService::Client, MetaLink::Req r) -> kj::Promise<Result<uint64_t>> {
    seen.emplace_back(r.session, r.seq);
    if (r.session == 1) return Result<uint64_t>(Error{Errc::kStale, "session 1 expired"});
    return Result<uint64_t>(r.seq);
  };
}

}  // namespace

TEST_CASE("client meta link: a mutation answered stale for its session is sent again under the new one") {
  Fixture fx;
  fx.a.leader = true;
  auto link = fx.link();
  link->setSession(1);
  std::vector<uint64_t> renewed;
  link->onStaleSession = [&](uint64_t stale) -> kj::Promise<bool> {
    renewed.push_back(stale);
    link->setSession(2);
    return true;
  };
  std::vector<std::pair<uint64_t, uint64_t>> seen;
  auto r = fx.run(link->mutate<uint64_t>("mutate", staleUnderSession1(seen)));
  REQUIRE(r.ok());
  CHECK(renewed == std::vector<uint64_t>{1});
  // Once under the expired session, once under the new one, with the same seq.
  REQUIRE(seen.size() == 2);
  CHECK(seen[0] == std::make_pair(uint64_t(1), *r));
  CHECK(seen[1] == std::make_pair(uint64_t(2), *r));
}

TEST_CASE("client meta link: a stale answer is passed on when no new session can be had") {
  Fixture fx;
  fx.a.leader = true;
  auto link = fx.link();
  link->setSession(1);
  link->onStaleSession = [](uint64_t) -> kj::Promise<bool> { return false; };
  std::vector<std::pair<uint64_t, uint64_t>> seen;
  auto r = fx.run(link->mutate<uint64_t>("mutate", staleUnderSession1(seen)));
  CHECK(r.code() == Errc::kStale);
  CHECK(seen.size() == 1);
}
