// The linearizability checker must accept what a register allows and nothing else, or the
// simulation's last check means nothing.
#include "tests/sim/linearizability.h"

#include <doctest/doctest.h>

using namespace tessera::meta::raft::sim;

namespace {

KvOp put(int client, int64_t v, uint64_t call, uint64_t ret) {
  KvOp op;
  op.client = client;
  op.kind = KvOp::Kind::kPut;
  op.value = v;
  op.call = call;
  op.ret = ret;
  return op;
}

KvOp get(int client, int64_t out, uint64_t call, uint64_t ret) {
  KvOp op;
  op.client = client;
  op.kind = KvOp::Kind::kGet;
  op.out = out;
  op.call = call;
  op.ret = ret;
  return op;
}

KvOp cas(int client, int64_t expected, int64_t v, bool ok, uint64_t call, uint64_t ret) {
  KvOp op;
  op.client = client;
  op.kind = KvOp::Kind::kCas;
  op.expected = expected;
  op.value = v;
  op.ok = ok;
  op.call = call;
  op.ret = ret;
  return op;
}

constexpr uint64_t kPending = KvOp::kPending;

}  // namespace

TEST_CASE("linearizability: a read after a completed write must see it") {
  CHECK(linearizable({put(0, 1, 1, 2), get(1, 1, 3, 4)}, 0));
  CHECK(!linearizable({put(0, 1, 1, 2), get(1, 0, 3, 4)}, 0));
}

TEST_CASE("linearizability: a read concurrent with a write may see either value") {
  CHECK(linearizable({put(0, 1, 1, 4), get(1, 0, 2, 3)}, 0));
  CHECK(linearizable({put(0, 1, 1, 4), get(1, 1, 2, 3)}, 0));
  CHECK(!linearizable({put(0, 1, 1, 4), get(1, 2, 2, 3)}, 0));
}

TEST_CASE("linearizability: reads cannot go back in time") {
  // Two reads during one write: once one saw the new value, a later one cannot see the old.
  CHECK(!linearizable({put(0, 1, 1, 10), get(1, 1, 2, 3), get(2, 0, 4, 5)}, 0));
  CHECK(linearizable({put(0, 1, 1, 10), get(1, 0, 2, 3), get(2, 1, 4, 5)}, 0));
}

TEST_CASE("linearizability: a write that never returned may or may not have happened") {
  CHECK(linearizable({put(0, 1, 1, kPending), get(1, 0, 2, 3)}, 0));
  CHECK(linearizable({put(0, 1, 1, kPending), get(1, 1, 2, 3)}, 0));
  CHECK(linearizable({put(0, 1, 1, kPending), get(1, 1, 2, 3), get(1, 1, 4, 5)}, 0));
  CHECK(!linearizable({put(0, 1, 1, kPending), get(1, 1, 2, 3), get(1, 0, 4, 5)}, 0));
}

TEST_CASE("linearizability: compare-and-swap results must match the register") {
  CHECK(linearizable({put(0, 5, 1, 2), cas(1, 5, 6, true, 3, 4), get(2, 6, 5, 6)}, 0));
  CHECK(!linearizable({put(0, 5, 1, 2), cas(1, 4, 6, true, 3, 4)}, 0));
  CHECK(!linearizable({put(0, 5, 1, 2), cas(1, 5, 6, false, 3, 4)}, 0));
  // Two concurrent swaps from the same value: only one can win.
  CHECK(!linearizable({cas(0, 0, 1, true, 1, 4), cas(1, 0, 2, true, 2, 3)}, 0));
  CHECK(linearizable({cas(0, 0, 1, true, 1, 4), cas(1, 0, 2, false, 2, 3)}, 0));
}

TEST_CASE("linearizability: keys are independent") {
  KvOp a = put(0, 1, 1, 2);
  a.key = 1;
  KvOp b = get(1, 0, 3, 4);  // key 0 was never written
  CHECK(linearizable({a, b}, 0));
  std::string why;
  b.key = 1;
  CHECK(!linearizable({a, b}, 0, &why));
  CHECK(why.find("key 1") != std::string::npos);
}
