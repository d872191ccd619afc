// The deterministic simulation of the Raft core (see sim.h): many seeds per scenario. A
// failing seed prints how to replay it; pin it in kPinned once fixed.
#include "tests/sim/sim.h"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <string>

using namespace tessera::meta::raft::sim;

namespace {

// Seeds that once failed. They run first in every scenario, every time. No seed has failed
// against the committed core yet; these caught bugs injected on purpose while the simulation
// was written (mutation testing), in the scenario named, so they reach the corners where such
// bugs live. A seed replays the same run only as long as the simulation and the core draw
// from the generator in the same order.
const std::vector<uint64_t> kPinned = {
    13549753173720438958ull,  // votes granted without the up-to-date check (3 nodes)
    10639777043999357295ull,  // the same (5 nodes)
    953694087024172328ull,    // heartbeats carrying the leader's commit past match (3 nodes)
    13872845105245178555ull,  // the same (5 nodes)
    9961173516398410662ull,   // the same (membership)
    7038852328585798000ull,   // a vote not synced before the response (no check-quorum)
    7744168731700044158ull,   // the same (heavy loss)
    3783065536536278134ull,   // ReadIndex answered without a heartbeat round (no check-quorum)
};

// Runs `defaultRuns` random seeds (TESSERA_SIM_RUNS overrides; TESSERA_SIM_SEED runs only
// that one) after the pinned ones, stopping at the first failure.
void runSeeds(const char* scenario, const Options& options, size_t defaultRuns) {
  auto start = std::chrono::steady_clock::now();
  size_t runs = 0;
  std::string last;
  for (uint64_t seed : seeds(defaultRuns, kPinned)) {
    Cluster cluster(options, seed);
    cluster.run();
    ++runs;
    last = cluster.summary();
    if (!cluster.violations().empty()) {
      std::string replay = "replay with TESSERA_SIM_SEED=" + std::to_string(seed) +
                           " (add TESSERA_SIM_TRACE=1 for every event): sim_test -tc=\"" +
                           scenario + "\"";
      std::fprintf(stderr, "%s\n%s\n%s\n", cluster.violations().front().c_str(),
                   cluster.summary().c_str(), replay.c_str());
      FAIL_CHECK(cluster.violations().front() << "\n" << replay);
      return;
    }
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  start)
                .count();
  MESSAGE(std::string(scenario) << ": " << runs << " seeds in " << ms << " ms; last: " << last);
}

}  // namespace

TEST_CASE("raft sim: 3 nodes keep every invariant under loss, partitions and crashes") {
  Options o;
  o.nodes = 3;
  runSeeds("raft sim: 3 nodes keep every invariant under loss, partitions and crashes", o, 600);
}

TEST_CASE("raft sim: 5 nodes keep every invariant under loss, partitions and crashes") {
  Options o;
  o.nodes = 5;
  o.crashEvery = 200;
  runSeeds("raft sim: 5 nodes keep every invariant under loss, partitions and crashes", o, 450);
}

TEST_CASE("raft sim: membership changes and leadership transfers keep every invariant") {
  Options o;
  o.nodes = 3;
  o.membershipEvery = 120;
  o.transferEvery = 200;
  runSeeds("raft sim: membership changes and leadership transfers keep every invariant", o, 450);
}

TEST_CASE("raft sim: without check-quorum a deposed leader serves no stale reads") {
  // A leader cut off from the majority keeps believing it leads; only ReadIndex's heartbeat
  // round keeps its reads linearizable.
  Options o;
  o.nodes = 3;
  o.checkQuorum = false;
  o.partitionEvery = 150;
  runSeeds("raft sim: without check-quorum a deposed leader serves no stale reads", o, 250);
}

TEST_CASE("raft sim: heavy loss and frequent crashes keep every invariant") {
  Options o;
  o.nodes = 5;
  o.dropRate = 0.2;
  o.dupRate = 0.05;
  o.maxDelay = 6;
  o.partitionEvery = 100;
  o.crashEvery = 100;
  o.compactEvery = 40;
  o.membershipEvery = 300;
  runSeeds("raft sim: heavy loss and frequent crashes keep every invariant", o, 250);
}

TEST_CASE("raft sim: running one seed twice gives an identical trace") {
  Options o;
  o.membershipEvery = 150;
  o.transferEvery = 150;
  uint64_t previous = 0;
  std::vector<uint64_t> some = seeds(3, kPinned);
  if (some.size() > 3) some.resize(3);  // a few are enough, whatever TESSERA_SIM_RUNS says
  for (uint64_t seed : some) {
    CAPTURE(seed);
    Cluster a(o, seed), b(o, seed);
    a.run();
    b.run();
    CHECK(a.traceEvents() > 1000);
    CHECK(a.traceHash() == b.traceHash());
    CHECK(a.traceEvents() == b.traceEvents());
    CHECK(a.violations() == b.violations());
    CHECK(a.traceHash() != previous);
    previous = a.traceHash();
  }
}
