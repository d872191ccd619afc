// tests/sim/linearizability.h — a linearizability checker for histories of integer registers
// (put, get, compare-and-swap), in the style of Wing & Gong with Lowe's memoization (as in
// Porcupine): a depth-first search for a total order that respects real time and explains
// every result, remembering (set of linearized ops, register value) pairs already explored.
// Registers are independent, so each key is checked on its own (P-compositionality).
// Exponential in the worst case: keep histories small (tens of operations per key).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tessera::meta::raft::sim {

struct KvOp {
  static constexpr uint64_t kPending = UINT64_MAX;
  enum class Kind : uint8_t { kPut, kGet, kCas };

  int client = 0;
  Kind kind = Kind::kGet;
  int key = 0;
  int64_t value = 0;     // put: the value written; cas: the new value
  int64_t expected = 0;  // cas
  uint64_t call = 0;     // logical times, distinct for every call and return
  uint64_t ret = kPending;
  int64_t out = 0;  // get: the value read
  bool ok = false;  // cas: whether it swapped

  std::string toString() const;
};

// True if the history is linearizable, every register starting at `initial`. Operations that
// never returned (ret == kPending) may take effect at any point after their call, or never.
// On failure `why` (if given) names the key and lists its history.
bool linearizable(const std::vector<KvOp>& history, int64_t initial, std::string* why = nullptr);

}  // namespace tessera::meta::raft::sim
