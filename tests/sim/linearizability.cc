#include "tests/sim/linearizability.h"

#include <algorithm>
#include <map>
#include <unordered_set>

namespace tessera::meta::raft::sim {

namespace {

// The register after `op` from `state`, or false if `op`'s result cannot happen there.
bool step(const KvOp& op, int64_t state, int64_t* next) {
  *next = state;
  switch (op.kind) {
    case KvOp::Kind::kPut:
      *next = op.value;
      return true;
    case KvOp::Kind::kGet:
      return op.out == state;
    case KvOp::Kind::kCas:
      if (op.ret == KvOp::kPending) {
        // Its result is unknown: it did whatever the register at that point made it do.
        if (state == op.expected) *next = op.value;
        return true;
      }
      if (op.ok != (state == op.expected)) return false;
      if (op.ok) *next = op.value;
      return true;
  }
  return false;
}

struct Bits {
  std::vector<uint64_t> words;
  void set(size_t i) { words[i / 64] |= uint64_t(1) << (i % 64); }
  void clear(size_t i) { words[i / 64] &= ~(uint64_t(1) << (i % 64)); }
};

struct CacheKey {
  std::vector<uint64_t> words;
  int64_t state;
  bool operator==(const CacheKey&) const = default;
};

struct CacheKeyHash {
  size_t operator()(const CacheKey& k) const {
    uint64_t h = uint64_t(k.state) * 0x9e3779b97f4a7c15ull;
    for (uint64_t w : k.words) h = (h ^ w) * 0x100000001b3ull + (h >> 29);
    return size_t(h);
  }
};

// Dancing-links list of call and return events, ordered by time.
struct Event {
  bool isCall = false;
  size_t op = 0;
  Event* match = nullptr;  // a call's return
  Event* prev = nullptr;
  Event* next = nullptr;
};

void lift(Event* call) {
  call->prev->next = call->next;
  if (call->next) call->next->prev = call->prev;
  Event* ret = call->match;
  ret->prev->next = ret->next;
  if (ret->next) ret->next->prev = ret->prev;
}

void unlift(Event* call) {
  Event* ret = call->match;
  ret->prev->next = ret;
  if (ret->next) ret->next->prev = ret;
  call->prev->next = call;
  if (call->next) call->next->prev = call;
}

bool checkKey(const std::vector<KvOp>& ops, int64_t initial) {
  size_t n = ops.size();
  std::vector<Event> events(2 * n + 1);
  Event* head = &events[2 * n];
  struct Stamp {
    uint64_t time;
    bool isCall;
    size_t op;
  };
  std::vector<Stamp> stamps;
  for (size_t i = 0; i < n; ++i) {
    stamps.push_back({ops[i].call, true, i});
    stamps.push_back({ops[i].ret, false, i});
  }
  std::sort(stamps.begin(), stamps.end(), [](const Stamp& a, const Stamp& b) {
    if (a.time != b.time) return a.time < b.time;
    return a.isCall < b.isCall;  // pending returns all sit at the end
  });
  std::vector<Event*> callOf(n), retOf(n);
  Event* prev = head;
  for (size_t k = 0; k < stamps.size(); ++k) {
    Event* e = &events[k];
    e->isCall = stamps[k].isCall;
    e->op = stamps[k].op;
    (e->isCall ? callOf : retOf)[e->op] = e;
    e->prev = prev;
    prev->next = e;
    prev = e;
  }
  for (size_t i = 0; i < n; ++i) callOf[i]->match = retOf[i];

  Bits linearized{std::vector<uint64_t>((n + 63) / 64, 0)};
  std::unordered_set<CacheKey, CacheKeyHash> cache;
  struct Frame {
    Event* call;
    int64_t state;
  };
  std::vector<Frame> stack;
  int64_t state = initial;
  Event* entry = head->next;
  while (head->next) {
    if (entry->isCall) {
      int64_t next;
      if (step(ops[entry->op], state, &next)) {
        Bits candidate = linearized;
        candidate.set(entry->op);
        if (cache.insert(CacheKey{candidate.words, next}).second) {
          stack.push_back(Frame{entry, state});
          state = next;
          linearized = std::move(candidate);
          lift(entry);
          entry = head->next;
          continue;
        }
      }
      entry = entry->next;
    } else {
      // An operation returned before any order could place it: undo the last choice.
      if (stack.empty()) return false;
      Frame f = stack.back();
      stack.pop_back();
      state = f.state;
      linearized.clear(f.call->op);
      unlift(f.call);
      entry = f.call->next;
    }
  }
  return true;
}

}  // namespace

std::string KvOp::toString() const {
  std::string s = "c" + std::to_string(client) + " ";
  switch (kind) {
    case Kind::kPut:
      s += "put(" + std::to_string(value) + ")";
      break;
    case Kind::kGet:
      s += "get()=" + std::to_string(out);
      break;
    case Kind::kCas:
      s += "cas(" + std::to_string(expected) + "->" + std::to_string(value) + ")=" +
           (ret == kPending ? "?"
            : ok            ? "ok"
                            : "fail");
      break;
  }
  s += " [" + std::to_string(call) + ", " +
       (ret == kPending ? std::string("pending") : std::to_string(ret)) + "]";
  return s;
}

bool linearizable(const std::vector<KvOp>& history, int64_t initial, std::string* why) {
  std::map<int, std::vector<KvOp>> byKey;
  for (const KvOp& op : history) {
    // A read that never returned shows nothing and changes nothing.
    if (op.kind == KvOp::Kind::kGet && op.ret == KvOp::kPending) continue;
    byKey[op.key].push_back(op);
  }
  for (const auto& [key, ops] : byKey) {
    if (checkKey(ops, initial)) continue;
    if (why) {
      *why = "key " + std::to_string(key) + " is not linearizable:";
      for (const KvOp& op : ops) *why += "\n  " + op.toString();
    }
    return false;
  }
  return true;
}

}  // namespace tessera::meta::raft::sim
