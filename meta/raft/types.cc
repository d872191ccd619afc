#include "meta/raft/types.h"

#include <algorithm>

#include "meta/raft/assert.h"

namespace tessera::meta::raft {

void raftBug(const char* file, int line, const char* condition, const std::string& detail) {
  throw RaftBug(std::string(file) + ":" + std::to_string(line) + ": raft bug: " + condition +
                (detail.empty() ? "" : ": " + detail));
}

bool ConfState::contains(NodeId id) const {
  return std::binary_search(voters.begin(), voters.end(), id);
}

namespace {

void putLe(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t getLe(std::string_view in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(static_cast<uint8_t>(in[at + i])) << (8 * i);
  return v;
}

}  // namespace

std::string ConfEntry::encode() const {
  std::string out;
  out.reserve(13 + 8 * voters.voters.size());
  out.push_back(static_cast<char>(change.op));
  putLe(out, change.node.value, 8);
  putLe(out, voters.voters.size(), 4);
  for (NodeId v : voters.voters) putLe(out, v.value, 8);
  return out;
}

Result<ConfEntry> ConfEntry::decode(std::string_view data) {
  if (data.size() < 13) return Error{Errc::kInvalid, "conf entry: too short"};
  auto op = static_cast<uint8_t>(data[0]);
  if (op > static_cast<uint8_t>(ConfChange::Op::kRemoveVoter)) {
    return Error{Errc::kInvalid, "conf entry: unknown op"};
  }
  ConfEntry e;
  e.change.op = static_cast<ConfChange::Op>(op);
  e.change.node = NodeId(getLe(data, 1, 8));
  uint64_t n = getLe(data, 9, 4);
  if (!e.change.node) return Error{Errc::kInvalid, "conf entry: node 0"};
  if (n == 0 || data.size() != 13 + 8 * n) return Error{Errc::kInvalid, "conf entry: bad size"};
  for (uint64_t i = 0; i < n; ++i) {
    NodeId v(getLe(data, 13 + 8 * i, 8));
    if (!v || (!e.voters.voters.empty() && v <= e.voters.voters.back())) {
      return Error{Errc::kInvalid, "conf entry: voters not sorted and distinct"};
    }
    e.voters.voters.push_back(v);
  }
  return e;
}

const char* messageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kPreVote:
      return "prevote";
    case MessageType::kPreVoteResp:
      return "prevoteResp";
    case MessageType::kVote:
      return "vote";
    case MessageType::kVoteResp:
      return "voteResp";
    case MessageType::kApp:
      return "app";
    case MessageType::kAppResp:
      return "appResp";
    case MessageType::kHeartbeat:
      return "heartbeat";
    case MessageType::kHeartbeatResp:
      return "heartbeatResp";
    case MessageType::kSnap:
      return "snap";
    case MessageType::kSnapStatus:
      return "snapStatus";
    case MessageType::kUnreachable:
      return "unreachable";
    case MessageType::kTimeoutNow:
      return "timeoutNow";
    case MessageType::kReadIndex:
      return "readIndex";
    case MessageType::kReadIndexResp:
      return "readIndexResp";
    case MessageType::kTransferLeader:
      return "transferLeader";
  }
  return "unknown";
}

const char* roleName(Role role) {
  switch (role) {
    case Role::kFollower:
      return "follower";
    case Role::kPreCandidate:
      return "preCandidate";
    case Role::kCandidate:
      return "candidate";
    case Role::kLeader:
      return "leader";
  }
  return "unknown";
}

std::string Message::toString() const {
  std::string s = messageTypeName(type);
  s += " " + std::to_string(from.value) + "->" + std::to_string(to.value);
  s += " t" + std::to_string(term.value);
  s += " i" + std::to_string(index.value) + "/t" + std::to_string(logTerm.value);
  if (!entries.empty()) {
    s += " n" + std::to_string(entries.size()) + "[" + std::to_string(entries.front().index.value) +
         ".." + std::to_string(entries.back().index.value) + "]";
  }
  if (commit) s += " c" + std::to_string(commit.value);
  if (reject) s += " reject hint" + std::to_string(rejectHint.value);
  if (snapshot) {
    s += " snap" + std::to_string(snapshot->index.value) + "/t" +
         std::to_string(snapshot->term.value);
  }
  if (context) s += " ctx" + std::to_string(context);
  if (target) s += " target" + std::to_string(target.value);
  if (transfer) s += " transfer";
  return s;
}

}  // namespace tessera::meta::raft
