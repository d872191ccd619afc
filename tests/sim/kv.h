// tests/sim/kv.h — the replicated state machine of the simulation: a few integer registers
// with put and compare-and-swap, and the exactly-once table (client -> last sequence number
// and its result) that makes a retried command return its first result instead of applying
// twice. Reads do not go through the log (they use ReadIndex).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tessera::meta::raft::sim {

struct KvCommand {
  enum class Kind : uint8_t { kPut = 0, kCas = 1 };
  Kind kind = Kind::kPut;
  int client = 0;
  uint64_t seq = 0;
  int key = 0;
  int64_t value = 0;     // put: the value; cas: the new value
  int64_t expected = 0;  // cas

  std::string encode() const;
  static std::optional<KvCommand> decode(const std::string& data);
};

class Kv {
 public:
  explicit Kv(int keys = 0) : values_(keys, 0) {}

  // Applies `cmd` once: the result (cas: 1 if swapped; put: 1). A command whose sequence
  // number was already applied returns the remembered result; an older one returns nullopt
  // (its client moved on and no longer waits).
  std::optional<int64_t> apply(const KvCommand& cmd);
  int64_t get(int key) const { return values_.at(key); }

  std::string encode() const;
  static Kv decode(const std::string& data);
  // FNV-1a of encode(): two replicas with the same hash at an index hold the same state.
  uint64_t hash() const;

 private:
  struct Session {
    uint64_t seq = 0;
    int64_t result = 0;
  };
  std::vector<int64_t> values_;
  std::map<int, Session> sessions_;
};

uint64_t fnv1a(const void* data, size_t size, uint64_t h = 14695981039346656037ull);

}  // namespace tessera::meta::raft::sim
