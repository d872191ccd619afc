// meta/raft/types.h — the values the Raft core takes and hands back: ids, log entries, the
// hard state a node persists, configurations, messages and the Ready hand-off. Plain copyable
// values with no I/O; the node converts them to and from its wire and disk formats.
#pragma once
#include <compare>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "fs/result.h"
#include "fs/types.h"

namespace tessera::meta::raft {

// A strong, ordered 64-bit counter (terms and log indexes): it does not mix with other ids or
// with bare integers, but it can be stepped and compared. Zero means "none"/"before the log".
template <typename Tag>
struct Counter {
  uint64_t value = 0;
  constexpr Counter() = default;
  constexpr explicit Counter(uint64_t v) : value(v) {}
  constexpr explicit operator bool() const { return value != 0; }
  friend constexpr auto operator<=>(Counter, Counter) = default;

  constexpr Counter next() const { return Counter(value + 1); }
  constexpr Counter prev() const { return Counter(value - 1); }
  friend constexpr Counter operator+(Counter a, uint64_t n) { return Counter(a.value + n); }
  friend constexpr Counter operator-(Counter a, uint64_t n) { return Counter(a.value - n); }
  // The distance from b to a; a >= b.
  friend constexpr uint64_t operator-(Counter a, Counter b) { return a.value - b.value; }
};

// A member of the Raft group. 0 is "nobody" (no vote, no known leader).
using NodeId = Id<struct RaftNodeTag>;
using Term = Counter<struct RaftTermTag>;
using LogIndex = Counter<struct RaftLogIndexTag>;

// The only source of randomness the core uses (election timeouts). The node seeds it and
// logs the seed; the simulation passes its own seeded generator.
using Rng = std::mt19937_64;

struct Entry {
  enum class Type : uint8_t { kNormal = 0, kConfChange = 1 };
  Term term;
  LogIndex index;
  Type type = Type::kNormal;
  // kNormal: the application's command (empty for the no-op a new leader appends);
  // kConfChange: ConfEntry::encode().
  std::string data;

  friend bool operator==(const Entry&, const Entry&) = default;
};

// What must be durable before any message of the same Ready is sent.
struct HardState {
  Term term;
  NodeId vote;
  LogIndex commit;

  friend bool operator==(const HardState&, const HardState&) = default;
};

// The voting members, sorted, without duplicates.
struct ConfState {
  std::vector<NodeId> voters;

  bool contains(NodeId id) const;
  friend bool operator==(const ConfState&, const ConfState&) = default;
};

// One membership change: add or remove one voter (Raft dissertation §4.1).
struct ConfChange {
  enum class Op : uint8_t { kAddVoter = 0, kRemoveVoter = 1 };
  Op op = Op::kAddVoter;
  NodeId node;

  friend bool operator==(const ConfChange&, const ConfChange&) = default;
};

// The data of a kConfChange entry: the change and the whole configuration it results in, so
// that a server replaying the log from any point (a new server starts from index 1 with no
// configuration) learns the configuration and not just a difference.
struct ConfEntry {
  ConfChange change;
  ConfState voters;

  // The op (1 byte), the node (8 bytes), the number of voters (4 bytes), the voters (8 bytes
  // each), integers little-endian.
  std::string encode() const;
  // kInvalid unless `data` is what encode() produces for a nonzero node and a nonempty,
  // sorted set of distinct nonzero voters.
  static Result<ConfEntry> decode(std::string_view data);
  friend bool operator==(const ConfEntry&, const ConfEntry&) = default;
};

// Describes a snapshot: the state machine after applying every entry up to `index` (whose term
// is `term`), and the configuration in force at that index. The data itself never passes
// through the core.
struct SnapshotMeta {
  LogIndex index;
  Term term;
  ConfState conf;

  friend bool operator==(const SnapshotMeta&, const SnapshotMeta&) = default;
};

enum class MessageType : uint8_t {
  kPreVote = 0,     // "would you vote for me at `term`?" (term is the candidate's next term)
  kPreVoteResp,     // reject = false grants
  kVote,            // RequestVote: index/logTerm describe the candidate's last entry
  kVoteResp,        // reject = false grants
  kApp,             // AppendEntries: entries follow (index, logTerm); commit is the leader's
  kAppResp,         // success: index = last matching index; reject: index = rejected prev
                    // index, rejectHint/logTerm = where the follower guesses logs agree
  kHeartbeat,       // commit = min(follower's match, leader's commit); context = read round
  kHeartbeatResp,   // echoes context
  kSnap,            // InstallSnapshot: snapshot (meta only); the node streams the data
  kSnapStatus,      // local, from the node: snapshot to `from` finished (reject = failed)
  kUnreachable,     // local, from the node: `from` could not be reached
  kTimeoutNow,      // leadership transfer: campaign now, skipping pre-vote and leases
  kReadIndex,       // follower asks the leader for a read index; context = request id
  kReadIndexResp,   // index = read index; context = request id
  kTransferLeader,  // follower asks the leader to transfer leadership to `target`
};
const char* messageTypeName(MessageType type);

// One message between cores. Which fields mean something depends on `type` (see above);
// unused fields stay zero. `term` is the sender's term (for kPreVote, the term it would use).
struct Message {
  MessageType type = MessageType::kApp;
  NodeId from;
  NodeId to;
  Term term;
  Term logTerm;
  LogIndex index;
  std::vector<Entry> entries;
  LogIndex commit;
  bool reject = false;
  LogIndex rejectHint;
  std::optional<SnapshotMeta> snapshot;
  uint64_t context = 0;
  NodeId target;          // kTransferLeader
  bool transfer = false;  // kPreVote/kVote of a campaign that kTimeoutNow started

  // "app 1->2 t3 i5/t2 n2 c4" — for logs and traces.
  std::string toString() const;
};

enum class Role : uint8_t { kFollower = 0, kPreCandidate, kCandidate, kLeader };
const char* roleName(Role role);

// Volatile state a node may want to act on (leader changed: fail or redirect requests).
struct SoftState {
  NodeId leader;
  Role role = Role::kFollower;

  friend bool operator==(const SoftState&, const SoftState&) = default;
};

// A linearizable read may be served once the state machine has applied `index`.
struct ReadState {
  LogIndex index;
  uint64_t requestId = 0;

  friend bool operator==(const ReadState&, const ReadState&) = default;
};

// The work the core wants done, in this order (see RaftCore::ready()):
//   1. install `snapshot` (its data was received out of band), append `entries` (they may
//      overwrite a suffix of the log), write `hardState`; fsync if `mustSync`;
//   2. then send `messages`;
//   3. apply `committedEntries` in order, serve `readStates` once applied reaches them;
//   4. call advance(ready).
struct Ready {
  std::optional<SoftState> softState;
  std::optional<HardState> hardState;
  std::optional<SnapshotMeta> snapshot;
  std::vector<Entry> entries;
  std::vector<Message> messages;
  std::vector<Entry> committedEntries;
  std::vector<ReadState> readStates;
  bool mustSync = false;
};

}  // namespace tessera::meta::raft

template <typename Tag>
struct std::hash<tessera::meta::raft::Counter<Tag>> {
  size_t operator()(tessera::meta::raft::Counter<Tag> c) const noexcept {
    return std::hash<uint64_t>()(c.value);
  }
};
